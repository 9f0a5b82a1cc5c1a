"""Permanent Stripe errors fail at once and are dead-lettered; transient ones are retried."""

from __future__ import annotations

import dagster as dg
import pytest
import stripe

from queue_pipelines.failures import PermanentError, TransientError
from queue_pipelines.providers.stripe import classify_stripe_error
from resources import StripeResource
from tests.fault_proxy import DROP, FaultProxy
from tests.harness import IntakeHarness
from tests.stripe_sandbox import payment_intents_of
from tests.test_payment_flow import payment


def step_events(result: dg.ExecuteInProcessResult, event_type: dg.DagsterEventType) -> list:
    return [e for e in result.all_events if e.event_type == event_type]


def test_declined_card_fails_without_retry_and_is_dead_lettered(
    instance, resources, intake, tenant, ledger
):
    intake.enqueue(payment(tenant, "declined", payment_method="pm_card_chargeCustomerFail"))
    harness = IntakeHarness(instance, resources, "payment")

    harness.drain()

    [result] = harness.results
    assert not result.success
    assert step_events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY) == []
    [failure] = step_events(result, dg.DagsterEventType.STEP_FAILURE)
    assert failure.step_failure_data.user_failure_data.description == (
        "card declined: Your card was declined. (card_declined)"
    )
    [letter] = intake.dead_letters()
    assert letter["run_id"] == result.run_id
    assert letter["reason"] == (
        f"run {result.run_id} failed in step charge_payment: "
        "card declined: Your card was declined. (card_declined)"
    )
    assert letter["fields"]["envelope"]  # the original entry, kept for replay
    assert intake.client.xlen(intake.stream_key("payment")) == 0
    # Stripe refused: nothing was charged, so the claim is released for a later attempt.
    assert ledger.get(f"payment:{tenant}:declined") is None


def test_transient_stripe_error_is_retried_and_charges_once(
    instance, resources, intake, tenant, localstripe_url
):
    with FaultProxy(localstripe_url) as proxy:
        proxy.fail_next("POST", "/v1/payment_intents", status=503)
        via_proxy = StripeResource(
            secret_key="sk_test_queue_pipelines", api_base=proxy.url, max_network_retries=0
        )
        intake.enqueue(payment(tenant, "flaky"))
        harness = IntakeHarness(instance, {**resources, "stripe": via_proxy}, "payment")

        harness.drain()
        intents = payment_intents_of(via_proxy, tenant)

    [result] = harness.results
    assert result.success
    assert len(step_events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY)) == 1
    posts = [(path, status) for method, path, status in proxy.seen if method == "POST"]
    assert [s for p, s in posts if p.startswith("/v1/payment_intents")] == [503, 200]
    assert [i.status for i in intents] == ["succeeded"]
    assert intake.client.xlen(intake.stream_key("payment")) == 0
    assert intake.dead_letters() == []


def test_dropped_connection_is_transient(localstripe_url):
    with FaultProxy(localstripe_url) as proxy:
        proxy.fail_next("GET", "/v1/customers", status=DROP)
        client = StripeResource(
            secret_key="sk_test_x", api_base=proxy.url, max_network_retries=0
        ).api()
        with pytest.raises(TransientError, match="could not reach Stripe"):
            client.find_or_create_customer(
                tenant_id="t", email="a@example.com", name=None, idempotency_key="k"
            )


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (stripe.RateLimitError("slow down", http_status=429), False),
        (stripe.APIError("boom", http_status=500), False),
        (stripe.APIConnectionError("reset"), False),
        (stripe.InvalidRequestError("in flight", param=None, http_status=409), False),
        (stripe.InvalidRequestError("No such payment_intent", param="id", http_status=404), True),
        (stripe.AuthenticationError("Invalid API Key provided: sk_live_****abcd", 401), True),
        (stripe.IdempotencyError("keys reused", http_status=400), True),
    ],
)
def test_classification(error, permanent):
    classified = classify_stripe_error(error)
    assert classified.permanent is permanent
    assert isinstance(classified, PermanentError if permanent else TransientError)


def test_an_api_key_quoted_by_stripe_is_not_repeated():
    error = stripe.AuthenticationError("Invalid API Key provided: sk_live_****abcd", 401)
    assert "sk_live" not in classify_stripe_error(error).reason
