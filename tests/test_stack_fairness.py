"""The run queue against a real `dagster-daemon` (tests/support/dagster_stack.py): one tenant's
backlog does not starve another tenant, and a high-priority request overtakes the queued runs
of lower priority. Both are the project's dagster.yaml at work (QueuedRunCoordinator: 4 runs
at once, 2 per `queue/tenant` value, dequeued by `dagster/priority` then age) with the
priority and tenant tags the intake sensor puts on every run (sensors/intake.py).

Each test ends as soon as what it asserts is decided; the backlog it made is torn down with
its stack, not drained.
"""

from __future__ import annotations

import functools
import uuid

import dagster as dg
import pytest
import yaml
from solders.keypair import Keypair

from queue_pipelines import tags
from queue_pipelines.nft.keys import keygen_json
from resources import RedisResource
from tests.support.dagster_stack import dagster_stack, wait_until
from tests.support.envelopes import payment
from tests.support.solana_fixtures import mint_envelope
from tests.support.stack_checks import (
    charges_by_key,
    cli,
    enqueue_payments,
    outcomes_by_key,
)

pytestmark = pytest.mark.stack


@pytest.fixture
def new_stack(tmp_path, redis_url, key_prefix, localstripe_url, mail_sink):
    """A stack to start once the test has set its environment (batch sizes, Solana)."""
    return functools.partial(
        dagster_stack,
        tmp_path,
        redis_url=redis_url,
        key_prefix=key_prefix,
        stripe_url=localstripe_url,
        smtp_port=mail_sink.port,
    )


def test_a_small_tenant_is_served_while_a_large_backlog_of_another_drains(
    new_stack, monkeypatch, redis_url, key_prefix, localstripe_url
):
    """Tenant A's 500 payments are 25 runs of 20; tenant B's 5, enqueued once all of A's runs
    are queued, are settled while most of A's are still waiting. Without the per-tenant limit
    the queue is first in, first out and B's run could start only after A's 25th was
    dequeued: at least 21 of A's 25 runs (420 requests) would be settled by then."""
    monkeypatch.setenv("QP_BATCH_SIZE_PAYMENT", "20")
    intake = RedisResource(url=redis_url, key_prefix=key_prefix).intake()
    run_id = uuid.uuid4().hex[:8]
    tenant_a, tenant_b = f"big-{run_id}", f"small-{run_id}"
    keys_a = [f"a-{i:03d}-{run_id}" for i in range(500)]
    keys_b = [f"b-{i}-{run_id}" for i in range(5)]
    with new_stack() as stack:
        enqueue_payments(redis_url, key_prefix, tenant_a, keys_a)
        wait_until(
            lambda: len(stack.runs({tags.TENANT: tenant_a})) >= 25, 300,
            "the 25 runs of tenant A's backlog", stack=stack,
        )  # fmt: skip
        enqueue_payments(redis_url, key_prefix, tenant_b, keys_b)

        settled_b = wait_until(
            lambda: (
                (found := outcomes_by_key(intake, "payment", tenant_b, keys_b))
                and len(found) == len(keys_b)
                and found
            ),
            600,
            "tenant B's 5 payments to be settled",
            interval=0.5,
            stack=stack,
        )
        settled_a = len(outcomes_by_key(intake, "payment", tenant_a, keys_a))
        print(f"tenant B's 5 settled when {settled_a} of tenant A's 500 were")

        assert all(outcome.succeeded for outcome in settled_b.values()), settled_b
        assert charges_by_key(localstripe_url, tenant_b) == {key: 1 for key in keys_b}
        # B was not served after A's backlog: more than half of A's requests still wait.
        assert settled_a < len(keys_a) // 2, (
            f"{settled_a} of tenant A's {len(keys_a)} payments were settled before tenant B's 5"
        )
        runs_b = stack.runs({tags.TENANT: tenant_b})
        assert [batch_size(stack, r["runId"]) for r in runs_b] == [5], runs_b


def batch_size(stack, run_id: str) -> int:
    """How many requests a batch run carries: its run config's (no tag says it)."""
    reply = stack.graphql(
        "query($id: ID!) { runOrError(runId: $id) { ... on Run { runConfigYaml } } }",
        {"id": run_id},
    )
    [op] = yaml.safe_load(reply["runOrError"]["runConfigYaml"])["ops"].values()
    return len(op["config"]["requests"])


def queue_events(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float | None]:
    """When the run entered the run queue, and when the daemon took it off to launch it
    (RUN_STARTING, which the run-queue daemon reports just before it launches; None: not
    yet). Both come from the daemon's clock, in the order it acted."""
    enqueued = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED, limit=1
    ).records
    dequeued = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.RUN_STARTING, limit=1
    ).records
    return (
        enqueued[0].timestamp,
        dequeued[0].timestamp if dequeued else None,
    )


def test_a_priority_payment_overtakes_the_queued_mints_of_its_tenant(
    new_stack, monkeypatch, redis_url, key_prefix, rpc_ledger
):
    """200 priority-0 mints (10 runs of 20) then one priority-9 payment, all of one tenant, so
    the per-tenant limit cannot be what lets the payment through: of the mint runs waiting in
    the queue when the payment's run joined it, the payment's run is dequeued before all but
    those the daemon was already launching (a dequeue pass takes at most the tenant's 2
    slots). Mints run for real, on a LiteSVM ledger behind the JSON-RPC endpoint that
    production's client path uses."""
    payer = Keypair()
    rpc_ledger.rpc.ledger.fund(payer.pubkey())
    monkeypatch.setenv("QP_BATCH_SIZE_MINT", "20")
    monkeypatch.setenv("SOLANA_RPC_URL", rpc_ledger.url)
    monkeypatch.setenv("SOLANA_PAYER_KEYPAIR", keygen_json(payer))
    tenant = f"prio-{uuid.uuid4().hex[:8]}"
    mints = [
        mint_envelope(tenant, f"mint-{n:03d}", Keypair().pubkey(), n).to_wire() for n in range(200)
    ]
    urgent = payment(tenant, "urgent-1", priority=9).to_wire()
    with new_stack() as stack:
        cli(redis_url, key_prefix, "enqueue", "--file", "-", stdin="\n".join(mints) + "\n")
        wait_until(
            lambda: len(stack.runs({tags.TENANT: tenant, tags.JOB_TYPE: "mint"})) >= 10, 300,
            "the 10 mint runs", stack=stack,
        )  # fmt: skip
        cli(redis_url, key_prefix, "enqueue", "--file", "-", stdin=urgent + "\n")
        [payment_run] = wait_until(
            lambda: stack.runs({tags.TENANT: tenant, tags.JOB_TYPE: "payment"}), 300,
            "the payment's run", stack=stack,
        )  # fmt: skip
        assert payment_run["tags"][tags.PRIORITY] == "9"
        with dg.DagsterInstance.from_config(str(stack.home)) as instance:
            payment_enqueued, payment_dequeued = wait_until(
                lambda: (
                    (found := queue_events(instance, payment_run["runId"]))[1] is not None and found
                ),
                900,
                "the payment's run to leave the run queue",
                interval=0.5,
                stack=stack,
            )
            mint_runs = stack.runs({tags.TENANT: tenant, tags.JOB_TYPE: "mint"})
            mints_queued = {r["runId"]: queue_events(instance, r["runId"]) for r in mint_runs}
        assert {r["tags"][tags.PRIORITY] for r in mint_runs} == {"0"}

    waiting = {
        run_id: dequeued
        for run_id, (enqueued, dequeued) in mints_queued.items()
        if enqueued < payment_enqueued and (dequeued is None or dequeued > payment_enqueued)
    }
    overtaken = [d for d in waiting.values() if d is None or d > payment_dequeued]
    print(f"{len(overtaken)} of {len(waiting)} mint runs queued ahead of the payment left after it")
    # The case is only made if a backlog of mints was waiting ahead of the payment.
    assert len(waiting) >= 5, f"only {len(waiting)} mint runs were queued ahead of the payment"
    assert len(waiting) - len(overtaken) <= 2, (
        f"{len(waiting) - len(overtaken)} of the {len(waiting)} mint runs queued ahead of the "
        "priority-9 payment left the queue before it"
    )
