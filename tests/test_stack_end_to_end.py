"""End to end against a real `dagster-daemon` and webserver (SQLite storage): requests enqueued
by the CLI become runs the daemon launches, visible through GraphQL with their tags, and
succeed; their entries are acked and their charges made once."""

from __future__ import annotations

import uuid

import pytest

from queue_pipelines import tags
from tests.support.dagster_stack import dagster_stack, wait_until
from tests.support.stack_checks import charges_by_key, enqueue_payments, intake_left

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def stack_prefix(redis_url):
    import redis

    prefix = f"qptest-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url, stack_prefix, localstripe_url, mail_sink):
    with dagster_stack(
        tmp_path_factory.mktemp("stack"),
        redis_url=redis_url,
        key_prefix=stack_prefix,
        stripe_url=localstripe_url,
        smtp_port=mail_sink.port,
    ) as running:
        yield running


@pytest.fixture
def stack_intake(redis_url, stack_prefix):
    from resources import RedisResource

    return RedisResource(url=redis_url, key_prefix=stack_prefix).intake()


def test_cli_requests_become_tagged_runs_that_succeed_and_are_acked(
    stack, stack_intake, redis_url, stack_prefix, localstripe_url, tenant
):
    keys = [f"e2e-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    enqueue_payments(redis_url, stack_prefix, tenant, keys)

    def settled():
        runs = stack.runs({tags.TENANT: tenant})
        done = runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs)
        return done and intake_left(stack_intake, "payment") == (0, 0) and runs

    runs = wait_until(settled, 600, "the payments to be run and acked", interval=2, stack=stack)

    assert {r["status"] for r in runs} == {"SUCCESS"}, runs
    for run in runs:
        assert run["tags"][tags.JOB_TYPE] == "payment"
        assert run["tags"][tags.TENANT] == tenant
        assert run["jobName"] == "payment_job"
        # The daemon, not the test, launched it: the sensor's run key is on the run.
        assert "dagster/sensor_name" in run["tags"]
    assert charges_by_key(localstripe_url, tenant) == {key: 1 for key in keys}
    assert stack_intake.dead_letters() == []
