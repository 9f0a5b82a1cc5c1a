"""A stack stopped mid-burst, by Ctrl-C (SIGINT to its process group) or by SIGKILL, and
started again on the same DAGSTER_HOME: every payment is charged exactly once and none is
dead-lettered. The daemon, webserver, code server and run workers are real subprocesses
(tests/support/dagster_stack.py); localstripe, Redis and the SMTP sink outlive the stack.

The instance is the project's dagster.yaml with its run-monitoring max runtime and poll
interval shortened, so a run whose worker was killed is failed (and retried) within the test's
time instead of after 15 minutes; the mechanism is the one `make run` uses. The start timeout
stays the project's 180 s: on a loaded machine a shorter one fails runs that are merely slow
to start, and each such failure spends one of the 3 run retries.
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest
import redis

from resources import RedisResource
from tests.support.dagster_stack import dagster_stack, wait_until
from tests.support.stack_checks import charges_by_key, enqueue_payments, intake_left

pytestmark = [pytest.mark.stack, pytest.mark.restarts, pytest.mark.usefixtures("runs_of_five")]

# 30 as the issue asks; QP_STACK_BURST makes it smaller while iterating on a loaded machine.
BURST = int(os.environ.get("QP_STACK_BURST", "30"))
IN_PROGRESS = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}
SHORT_MONITORING = {
    "run_monitoring": {
        "max_runtime_seconds": 120,
        "poll_interval_seconds": 5,
    }
}


@pytest.fixture
def runs_of_five(monkeypatch):
    """The burst goes out as 6 runs of 5, two at a time (the tenant limit), so it is still
    draining when the stop comes. In one run of 30 (the default batch holds 500) it can settle
    between the moment a run is seen under way and the signal, and the drill proves nothing."""
    monkeypatch.setenv("QP_BATCH_SIZE_PAYMENT", "5")


@pytest.fixture
def stack_prefix(redis_url):
    prefix = f"qptest-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def burst_then_stop_then_restart(
    sig, tmp_path, redis_url, stack_prefix, localstripe_url, mail_sink, tenant
):
    intake = RedisResource(url=redis_url, key_prefix=stack_prefix).intake()
    keys = [f"burst-{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(BURST)]
    with dagster_stack(
        tmp_path,
        redis_url=redis_url,
        key_prefix=stack_prefix,
        stripe_url=localstripe_url,
        smtp_port=mail_sink.port,
        overrides=SHORT_MONITORING,
    ) as stack:
        enqueue_payments(redis_url, stack_prefix, tenant, keys)
        # Mid-burst: runs have been launched and some are under way, the burst is not done.
        wait_until(
            lambda: any(r["status"] in IN_PROGRESS for r in stack.runs()),
            300,
            "the first runs of the burst",
            stack=stack,
        )
        stack.send(sig)
        if not stack.wait_gone(90):
            pytest.fail(f"the stack did not stop within 90 s of {sig!r}\n{stack.logs()}")
        assert intake_left(intake, "payment")[0] > 0, "the burst finished before the stop"

        stack.start()

        def drained():
            runs = stack.runs()
            return (
                intake_left(intake, "payment") == (0, 0)
                and runs
                and not any(r["status"] in IN_PROGRESS for r in runs)
            )

        wait_until(drained, 1500, "the burst to drain after the restart", interval=3, stack=stack)

        dead = intake.dead_letters()
        assert dead == [], [d["reason"] for d in dead]
        assert charges_by_key(localstripe_url, tenant) == {key: 1 for key in keys}


def test_sigint_mid_burst_then_restart_charges_each_payment_once(
    tmp_path, redis_url, stack_prefix, localstripe_url, mail_sink, tenant
):
    burst_then_stop_then_restart(
        signal.SIGINT, tmp_path, redis_url, stack_prefix, localstripe_url, mail_sink, tenant
    )


def test_sigkill_mid_burst_then_restart_charges_each_payment_once(
    tmp_path, redis_url, stack_prefix, localstripe_url, mail_sink, tenant
):
    burst_then_stop_then_restart(
        signal.SIGKILL, tmp_path, redis_url, stack_prefix, localstripe_url, mail_sink, tenant
    )
