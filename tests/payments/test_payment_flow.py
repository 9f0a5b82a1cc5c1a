"""Intake → sensor ticks → payment runs → PaymentIntents in localstripe, each exactly once."""

from __future__ import annotations

from queue_pipelines.intake.payloads import PaymentPayload
from queue_pipelines.intake.schema import Envelope
from tests.support.harness import IntakeHarness, outcome_rows
from tests.support.reexecution import reexecute_all
from tests.support.stripe_sandbox import payment_intents_of


def payment(tenant: str, key: str, amount: int = 2500, **overrides) -> Envelope:
    payload = {
        "order_id": f"order-{key}",
        "amount": amount,
        "currency": "usd",
        "customer_email": "buyer@example.com",
        "customer_name": "Ada Buyer",
        "payment_method": "pm_card_visa",
        **overrides,
    }
    return Envelope(
        type="payment", tenant_id=tenant, idempotency_key=key, payload=PaymentPayload(**payload)
    )


def test_fifty_payments_make_fifty_payment_intents(
    instance, resources, intake, tenant, stripe_resource
):
    intake.enqueue_many([payment(tenant, f"k{i}", amount=1000 + i) for i in range(50)])
    harness = IntakeHarness(instance, resources, "payment")

    executed = harness.drain()

    assert executed == 1  # one batch
    [result] = harness.results
    assert result.success
    rows = outcome_rows(result)
    assert [r["status"] for r in rows] == ["succeeded"] * 50
    assert [r["order_id"] for r in rows] == [f"order-k{i}" for i in range(50)]
    intents = payment_intents_of(stripe_resource, tenant)
    assert len(intents) == 50
    assert sorted(i.amount for i in intents) == [1000 + i for i in range(50)]
    assert {i.status for i in intents} == {"succeeded"}
    stats = intake.stats().as_dict()
    stream = stats["streams"]["payment"]
    assert (stream["length"], stream["pending"], stream["undelivered"]) == (0, 0, 0)
    assert stream["oldest_pending_age_seconds"] is None
    assert stream["oldest_waiting_age_seconds"] is None and stream["tenants"] == {}


def test_one_run_per_request_when_the_batch_size_is_one(
    instance, resources, intake, tenant, stripe_resource
):
    intake.enqueue_many([payment(tenant, f"one{i}") for i in range(3)])
    harness = IntakeHarness(instance, resources, "payment", batch_size=1)

    assert harness.drain() == 3

    assert [r.dagster_run.tags["queue/request_key"] for r in harness.results] == [
        f"payment:{tenant}:one{i}" for i in range(3)
    ]
    assert len(payment_intents_of(stripe_resource, tenant)) == 3
    assert intake.client.xlen(intake.stream_key("payment")) == 0


def test_a_batch_never_mixes_tenants(instance, resources, intake, tenant, stripe_resource):
    other = f"{tenant}-b"
    intake.enqueue_many(
        [payment(tenant, "a1"), payment(other, "b1"), payment(tenant, "a2"), payment(other, "b2")]
    )
    harness = IntakeHarness(instance, resources, "payment")

    assert harness.drain() == 2

    for result in harness.results:
        run_tenant = result.dagster_run.tags["queue/tenant"]
        config = result.dagster_run.run_config["ops"]["charge_payments"]["config"]
        assert config["tenant_id"] == run_tenant
        assert {r["idempotency_key"][0] for r in config["requests"]} == {
            "a" if run_tenant == tenant else "b"
        }
    assert len(payment_intents_of(stripe_resource, tenant)) == 2
    assert len(payment_intents_of(stripe_resource, other)) == 2


def test_same_key_three_times_charges_once(instance, resources, intake, tenant, stripe_resource):
    ids = [intake.enqueue(payment(tenant, "dup")) for _ in range(3)]
    harness = IntakeHarness(instance, resources, "payment")

    assert harness.drain() == 1

    assert len(payment_intents_of(stripe_resource, tenant)) == 1
    assert intake.client.xlen(intake.stream_key("payment")) == 0, f"entries {ids} not all acked"


def test_duplicate_arriving_after_success_is_acked_without_a_run(
    instance, resources, intake, tenant, stripe_resource
):
    harness = IntakeHarness(instance, resources, "payment")
    intake.enqueue(payment(tenant, "late"))
    assert harness.drain() == 1
    intake.enqueue(payment(tenant, "late"))

    assert harness.tick() == []

    assert len(payment_intents_of(stripe_resource, tenant)) == 1
    assert intake.client.xlen(intake.stream_key("payment")) == 0


def test_full_reexecution_of_a_succeeded_run_does_not_charge_again(
    instance, resources, intake, tenant, stripe_resource, monkeypatch
):
    intake.enqueue(payment(tenant, "reexec"))
    harness = IntakeHarness(instance, resources, "payment")
    harness.drain()
    [original] = harness.results

    success, rows = reexecute_all(instance, resources, original.run_id, monkeypatch)

    assert success
    assert [(r["status"], r["settled"]) for r in rows] == [("succeeded", "earlier")]
    assert len(payment_intents_of(stripe_resource, tenant)) == 1


def test_reexecution_after_the_outcomes_expired_replays_the_ledger_and_charges_nothing(
    instance, resources, intake, tenant, stripe_resource, monkeypatch
):
    intake.enqueue_many([payment(tenant, "old1"), payment(tenant, "old2")])
    harness = IntakeHarness(instance, resources, "payment")
    harness.drain()
    [original] = harness.results
    first = {r["request"]: r["payment_intent"] for r in outcome_rows(original)}
    # A week later the intake has forgotten the outcomes; the effect ledger has not.
    intake.client.delete(*intake.client.keys(f"{intake.prefix}:outcome:*"))

    success, rows = reexecute_all(instance, resources, original.run_id, monkeypatch)

    assert success
    assert {r["request"]: (r["payment_intent"], r["charged"]) for r in rows} == {
        key: (intent, "earlier") for key, intent in first.items()
    }
    assert len(payment_intents_of(stripe_resource, tenant)) == 2


def test_a_key_reused_for_a_different_payment_is_dead_lettered_not_run(
    instance, resources, intake, tenant, stripe_resource
):
    first = intake.enqueue(payment(tenant, "reused", amount=1000))
    intake.enqueue(payment(tenant, "reused", amount=1000))  # the same request again
    other = intake.enqueue(payment(tenant, "reused", amount=9999))  # not the same request
    harness = IntakeHarness(instance, resources, "payment")

    assert harness.drain() == 1

    [intent] = payment_intents_of(stripe_resource, tenant)
    assert intent.amount == 1000
    [letter] = intake.dead_letters()
    assert letter["entry_id"] == other
    assert "'reused' was first used for a different payment request" in letter["reason"]
    assert f"(entry {first})" in letter["reason"]
    assert intake.client.xlen(intake.stream_key("payment")) == 0
