"""Permanent Stripe errors fail at once and are dead-lettered; transient ones are retried."""

from __future__ import annotations

import pytest
import stripe

from queue_pipelines.failures import PermanentError, SentBefore, TransientError
from queue_pipelines.intake.dead_letters import replay_dead_letter
from queue_pipelines.providers.stripe import classify_stripe_error
from queue_pipelines.sandbox.relay import DROP, Relay
from resources import StripeResource
from tests.payments.test_payment_flow import payment
from tests.support.harness import IntakeHarness, outcome_rows
from tests.support.stripe_sandbox import payment_intents_of


def test_declined_card_fails_that_request_alone_and_is_dead_lettered_with_stripes_reason(
    instance, resources, intake, tenant, ledger
):
    intake.enqueue(payment(tenant, "declined", payment_method="pm_card_chargeCustomerFail"))
    harness = IntakeHarness(instance, resources, "payment")

    harness.drain()

    [result] = harness.results[:1]
    # The request failed for good, so its run fails too, once the request is settled, and
    # says why; Dagster's run retries leave it alone (an op failure, not retried).
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_failure_data.user_failure_data.description.startswith(
        "1 of 1 payment requests failed for good and were dead-lettered"
    )
    [row] = outcome_rows(result)
    assert (row["status"], row["attempts"]) == ("failed", 1)  # permanent: no retry
    assert row["reason"] == "card declined: Your card was declined. (card_declined)"
    [letter] = intake.dead_letters()
    assert letter["run_id"] == result.run_id
    assert letter["reason"] == "card declined: Your card was declined. (card_declined)"
    assert letter["fields"]["envelope"]  # the original entry, kept for replay
    assert intake.client.xlen(intake.stream_key("payment")) == 0
    # Stripe refused: nothing was charged, so the claim is released for a later attempt.
    assert ledger.get(f"payment:{tenant}:declined") is None


def test_two_declined_cards_among_twenty_payments(
    instance, resources, intake, tenant, stripe_resource, mail_sink
):
    declined = {"d5", "d12"}
    intake.enqueue_many(
        [
            payment(
                tenant,
                key,
                payment_method="pm_card_chargeCustomerFail" if key in declined else "pm_card_visa",
                customer_email=f"{tenant}-{key}@example.com",
            )
            for key in (f"d{i}" for i in range(20))
        ]
    )
    harness = IntakeHarness(instance, resources, "payment")

    harness.drain()

    [result] = [r for r in harness.results if r.dagster_run.job_name == "payment_job"]
    rows = outcome_rows(result)
    statuses = {r["request"]: r["status"] for r in rows}
    assert {k for k, v in statuses.items() if v == "failed"} == declined
    # The table puts what needs a look first; the rest keep the batch's order.
    assert [r["request"] for r in rows[:2]] == ["d5", "d12"]
    assert [r["request"] for r in rows[2:]] == [f"d{i}" for i in range(20) if i not in (5, 12)]
    assert sum(v == "succeeded" for v in statuses.values()) == 18
    intents = payment_intents_of(stripe_resource, tenant)
    assert sorted(i.status for i in intents).count("succeeded") == 18
    letters = intake.dead_letters()
    assert sorted(letter["request_key"] for letter in letters) == sorted(
        f"payment:{tenant}:{key}" for key in declined
    )
    assert {letter["reason"] for letter in letters} == {
        "card declined: Your card was declined. (card_declined)"
    }
    assert intake.client.xlen(intake.stream_key("payment")) == 0

    def templates_to(key: str) -> list[str]:
        return [
            m["X-Queue-Pipelines-Template"] for m in mail_sink.to(f"{tenant}-{key}@example.com")
        ]

    # 18 confirmations now; each decline queued a payment_failed e-mail for notification_job.
    assert all(templates_to(k) == ["payment_confirmation"] for k in statuses if k not in declined)
    assert all(templates_to(k) == [] for k in declined)
    IntakeHarness(instance, resources, "notification").drain()
    assert all(templates_to(k) == ["payment_failed"] for k in declined)


def test_transient_stripe_error_is_retried_for_that_request_alone_and_charges_once(
    instance, resources, intake, tenant, localstripe_url
):
    with Relay(localstripe_url) as proxy:
        proxy.fail_next("POST", "/v1/payment_intents", status=503)
        via_proxy = StripeResource(secret_key="sk_test_queue_pipelines", api_base=proxy.url)
        intake.enqueue(payment(tenant, "flaky"))
        harness = IntakeHarness(instance, {**resources, "stripe": via_proxy}, "payment")

        harness.drain()
        intents = payment_intents_of(via_proxy, tenant)

    [result] = harness.results
    assert result.success
    [row] = outcome_rows(result)
    assert (row["status"], row["attempts"]) == ("succeeded", 2)
    posts = [(path, status) for method, path, status in proxy.seen if method == "POST"]
    assert [s for p, s in posts if p.startswith("/v1/payment_intents")] == [503, 200]
    assert [i.status for i in intents] == ["succeeded"]
    assert intake.client.xlen(intake.stream_key("payment")) == 0
    assert intake.dead_letters() == []


def test_dropped_connection_is_transient(localstripe_url):
    with Relay(localstripe_url) as proxy:
        proxy.fail_next("GET", "/v1/customers", status=DROP)
        client = StripeResource(secret_key="sk_test_x", api_base=proxy.url).api()
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
    ],
)
def test_classification(error, permanent):
    classified = classify_stripe_error(error)
    assert classified.permanent is permanent
    assert isinstance(classified, PermanentError if permanent else TransientError)


def test_an_idempotency_key_reused_is_neither_a_refusal_nor_a_plain_retry():
    classified = classify_stripe_error(stripe.IdempotencyError("keys reused", http_status=400))
    assert isinstance(classified, SentBefore)
    assert not isinstance(classified, PermanentError | TransientError)


def test_an_api_key_quoted_by_stripe_is_not_repeated():
    error = stripe.AuthenticationError("Invalid API Key provided: sk_live_****abcd", 401)
    assert "sk_live" not in classify_stripe_error(error).reason


@pytest.fixture(params=["sandbox", "idempotent sandbox"])
def stripe_either_way(request, resources) -> tuple[dict, StripeResource]:
    """The run's resources on the Stripe sandbox without and with Idempotency-Key (as
    Stripe has it: a key used again with other parameters is refused)."""
    if request.param == "sandbox":
        return resources, resources["stripe"]
    stripe = StripeResource(
        secret_key="sk_test_queue_pipelines",
        api_base=request.getfixturevalue("idempotent_localstripe_url"),
        timeout_seconds=10,
    )
    return {**resources, "stripe": stripe}, stripe


def test_a_declined_payment_replayed_with_a_working_card_is_charged(
    instance, stripe_either_way, intake, tenant
):
    """The dead letter of a request that failed in its run is replayed with a fixed payload:
    the replay runs (the failed outcome and the old payload's digest no longer stand in its
    way) and charges once; a second replay of the now successful request is acked. With
    Stripe's Idempotency-Key too: the fixed payload is a new call to Stripe, not the declined
    one's key used again with another card."""
    resources, stripe_resource = stripe_either_way
    intake.enqueue(payment(tenant, "fixable", payment_method="pm_card_chargeCustomerFail"))
    harness = IntakeHarness(instance, resources, "payment")
    harness.drain()
    [letter] = intake.dead_letters()
    assert "card declined" in letter["reason"]

    replay_dead_letter(intake, letter, {"payment_method": "pm_card_visa"})
    harness.drain()

    assert intake.dead_letters() == []
    assert intake.outcomes([f"payment:{tenant}:fixable"])[f"payment:{tenant}:fixable"].succeeded

    def charged() -> list[str]:
        intents = payment_intents_of(stripe_resource, tenant)
        return [intent.id for intent in intents if intent.status == "succeeded"]

    assert len(charged()) == 1

    # Replaying the old dead letter again (an operator's second try) charges nothing more.
    replay_dead_letter(intake, letter, {"payment_method": "pm_card_visa"})
    harness.drain()
    assert intake.dead_letters() == [] and intake.client.xlen(intake.stream_key("payment")) == 0
    assert len(charged()) == 1
