"""Intake → sensor ticks → payment runs → PaymentIntents in localstripe, each exactly once."""

from __future__ import annotations

from queue_pipelines.intake.payloads import PaymentPayload
from queue_pipelines.intake.schema import Envelope
from tests.harness import IntakeHarness
from tests.reexecution import reexecute_all
from tests.stripe_sandbox import payment_intents_of


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

    assert executed == 50
    assert all(result.success for result in harness.results)
    intents = payment_intents_of(stripe_resource, tenant)
    assert len(intents) == 50
    assert sorted(i.amount for i in intents) == [1000 + i for i in range(50)]
    assert {i.status for i in intents} == {"succeeded"}
    stats = intake.stats().as_dict()
    assert stats["streams"]["payment"] == {
        "length": 0,
        "pending": 0,
        "undelivered": 0,
        "oldest_pending_age_seconds": None,
    }


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

    success, replay = reexecute_all(
        instance, resources, original.run_id, monkeypatch, "charge_payment"
    )

    assert success
    assert replay.replayed is True
    assert replay.payment_intent_id == original.output_for_node("charge_payment").payment_intent_id
    assert len(payment_intents_of(stripe_resource, tenant)) == 1
