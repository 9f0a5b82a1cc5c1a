"""Refunds through the intake: partial, full, never beyond what was charged, never twice."""

from __future__ import annotations

import pytest

from queue_pipelines.failures import PermanentError
from queue_pipelines.intake.payloads import PaymentPayload, RefundPayload
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.ledger import effect_key
from queue_pipelines.payments import charge_once
from queue_pipelines.sandbox.relay import LOSE_REPLY, Relay
from resources import StripeResource
from tests.payments.test_payment_flow import payment
from tests.support.harness import IntakeHarness, outcome_rows
from tests.support.reexecution import reexecute_all


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
    [row] = outcome_rows(result)
    return row["payment_intent"]


def refunds_of(stripe_resource, payment_intent_id: str) -> list[int]:
    intent = (
        stripe_resource.api()
        .client()
        .v1.payment_intents.retrieve(payment_intent_id, params={"expand": ["latest_charge"]})
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

    first, second, third = (outcome_rows(r)[0] for r in harness.results)
    assert (first["status"], second["status"]) == ("succeeded", "succeeded")
    assert second["remaining_refundable"] == 0
    assert (third["status"], third["attempts"]) == ("failed", 1)  # permanent: not retried
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

    assert [outcome_rows(r)[0]["status"] for r in harness.results] == ["succeeded", "failed"]
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

    [row] = outcome_rows(harness.results[0])
    assert (row["amount"], row["remaining_refundable"]) == (1234, 0)
    assert refunds_of(stripe_resource, intent_id) == [1234]
    assert intake.client.xlen(intake.stream_key("refund")) == 0


def test_reexecuting_a_refund_run_does_not_refund_again(
    instance, resources, intake, tenant, stripe_resource, monkeypatch
):
    intent_id = charged(instance, resources, intake, tenant, amount=800)
    harness = IntakeHarness(instance, resources, "refund")
    intake.enqueue(refund(tenant, "once", intent_id, amount=300))
    harness.drain()

    intake.client.delete(*intake.client.keys(f"{intake.prefix}:outcome:*"))  # forgotten

    success, rows = reexecute_all(instance, resources, harness.results[0].run_id, monkeypatch)

    assert success and [r["refunded"] for r in rows] == ["earlier"]
    assert refunds_of(stripe_resource, intent_id) == [300]


def test_refund_whose_reply_was_lost_is_found_on_retry_not_refunded_again(
    instance, resources, intake, tenant, stripe_resource, localstripe_url
):
    """Stripe refunded but the reply never came back: the retry must find that refund rather
    than refuse (the balance already includes it) or refund a second time."""
    intent_id = charged(instance, resources, intake, tenant, amount=5000)
    with Relay(localstripe_url) as proxy:
        proxy.fail_next("POST", "/v1/refunds", status=LOSE_REPLY)
        via_proxy = StripeResource(secret_key="sk_test_queue_pipelines", api_base=proxy.url)
        harness = IntakeHarness(instance, {**resources, "stripe": via_proxy}, "refund")
        intake.enqueue(refund(tenant, "lost-reply", intent_id, amount=3000))
        harness.drain()

    [result] = harness.results
    assert result.success
    [row] = outcome_rows(result)
    assert (row["amount"], row["remaining_refundable"], row["attempts"]) == (3000, 2000, 2)
    assert refunds_of(stripe_resource, intent_id) == [3000]


def test_an_attempt_in_doubt_that_stripe_has_no_trace_of_is_tried_and_a_refusal_releases_it(
    ledger, stripe_resource, tenant
):
    """A claim taken by an attempt whose outcome nobody saw: Stripe is asked first. It holds
    no PaymentIntent of this request, so the charge is tried; the card is declined, nothing
    happened, and the claim goes (a replay with a working card starts afresh)."""
    key = effect_key("payment", tenant, "unknown-outcome")
    ledger.claim(key, "payment", "run-that-died")  # the attempt whose outcome nobody saw
    declined = PaymentPayload(
        order_id="o", amount=700, currency="usd", customer_email="d@example.com",
        payment_method="pm_card_chargeCustomerFail",
    )  # fmt: skip

    with pytest.raises(PermanentError, match="card declined"):
        charge_once(
            stripe_resource.api(), ledger, tenant_id=tenant, idempotency_key="unknown-outcome",
            payment=declined, run_id="retry-run", run_is_live=lambda run_id: False,
        )  # fmt: skip

    assert ledger.get(key) is None
