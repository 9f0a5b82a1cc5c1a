"""Refunds through the intake: partial, full, never beyond what was charged, never twice."""

from __future__ import annotations

import dagster as dg

from queue_pipelines.intake.schema import Envelope, RefundPayload
from tests.harness import IntakeHarness
from tests.test_payment_flow import payment


def refund(tenant: str, key: str, payment_intent_id: str, amount: int | None = None) -> Envelope:
    return Envelope(
        type="refund",
        tenant_id=tenant,
        idempotency_key=key,
        payload=RefundPayload(payment_intent_id=payment_intent_id, amount=amount),
    )


def charged(instance, resources, intake, tenant, amount: int) -> str:
    intake.enqueue(payment(tenant, f"pay-{amount}", amount=amount))
    harness = IntakeHarness(instance, resources, "payment")
    harness.drain()
    [result] = harness.results
    return result.output_for_node("charge_payment").payment_intent_id


def refunds_of(stripe_resource, payment_intent_id: str) -> list[int]:
    intent = stripe_resource.client().v1.payment_intents.retrieve(
        payment_intent_id, params={"expand": ["latest_charge"]}
    )
    return [r.amount for r in intent.latest_charge.refunds.data]


def test_two_partials_sum_to_the_charge_and_a_third_fails_naming_what_remains(
    instance, resources, intake, tenant, stripe_resource
):
    intent_id = charged(instance, resources, intake, tenant, amount=5000)
    harness = IntakeHarness(instance, resources, "refund")

    intake.enqueue(refund(tenant, "r1", intent_id, amount=3000))
    harness.drain()
    intake.enqueue(refund(tenant, "r2", intent_id, amount=2000))
    harness.drain()
    intake.enqueue(refund(tenant, "r3", intent_id, amount=1))
    harness.drain()

    first, second, third = harness.results
    assert first.success and second.success
    assert second.output_for_node("refund_payment").remaining == 0
    assert not third.success
    assert [e.event_type for e in third.all_events].count(
        dg.DagsterEventType.STEP_UP_FOR_RETRY
    ) == 0
    [letter] = intake.dead_letters()
    assert letter["reason"].endswith(
        f"refund of 0.01 USD exceeds the 0.00 USD still refundable on {intent_id} "
        "(50.00 USD of 50.00 USD already refunded)"
    ), letter["reason"]
    assert sorted(refunds_of(stripe_resource, intent_id)) == [2000, 3000]


def test_refund_above_the_remaining_amount_fails_with_that_amount(
    instance, resources, intake, tenant, stripe_resource
):
    intent_id = charged(instance, resources, intake, tenant, amount=5000)
    harness = IntakeHarness(instance, resources, "refund")
    intake.enqueue(refund(tenant, "part", intent_id, amount=4000))
    harness.drain()

    intake.enqueue(refund(tenant, "too-much", intent_id, amount=1500))
    harness.drain()

    assert [r.success for r in harness.results] == [True, False]
    [letter] = intake.dead_letters()
    assert letter["reason"].endswith(
        f"refund of 15.00 USD exceeds the 10.00 USD still refundable on {intent_id} "
        "(40.00 USD of 50.00 USD already refunded)"
    ), letter["reason"]
    assert refunds_of(stripe_resource, intent_id) == [4000]


def test_full_refund_and_duplicates_refund_once(
    instance, resources, intake, tenant, stripe_resource
):
    intent_id = charged(instance, resources, intake, tenant, amount=1234)
    for _ in range(3):
        intake.enqueue(refund(tenant, "full", intent_id))
    harness = IntakeHarness(instance, resources, "refund")

    assert harness.drain() == 1

    outcome = harness.results[0].output_for_node("refund_payment")
    assert (outcome.amount, outcome.remaining) == (1234, 0)
    assert refunds_of(stripe_resource, intent_id) == [1234]
    assert intake.client.xlen(intake.stream_key("refund")) == 0


def test_reexecuting_a_refund_run_does_not_refund_again(
    instance, resources, intake, tenant, stripe_resource
):
    intent_id = charged(instance, resources, intake, tenant, amount=800)
    harness = IntakeHarness(instance, resources, "refund")
    intake.enqueue(refund(tenant, "once", intent_id, amount=300))
    [request] = harness.tick()
    harness.launch(request)

    # An operator's "re-execute all": the same job, the same run config, a new run.
    again = harness.job.execute_in_process(
        run_config=request.run_config,
        instance=instance,
        resources=resources,
        tags={**request.tags, "dagster/parent_run_id": harness.results[0].run_id},
    )

    assert again.output_for_node("refund_payment").replayed is True
    assert refunds_of(stripe_resource, intent_id) == [300]
