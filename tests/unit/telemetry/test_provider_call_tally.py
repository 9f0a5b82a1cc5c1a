"""The tally of provider calls a batch run records for /metrics (telemetry/provider_calls.py): which
calls it sees, how it classes their errors, and what a reader accepts back."""

from __future__ import annotations

import smtplib

import httpx
import pytest
import stripe

from queue_pipelines.failures import TransientError
from queue_pipelines.metrics.run_totals import Totals
from queue_pipelines.providers.smtp import classify_smtp_error
from queue_pipelines.providers.stripe import classify_stripe_error
from queue_pipelines.providers.webhooks import classify_transport_error, status_error
from queue_pipelines.request_runner import Backoff, Item, process_items
from queue_pipelines.telemetry.provider_calls import (
    LATENCY_BUCKETS,
    observe_provider_call,
    tally_from_json,
    tally_provider_calls,
)

ONE_TRY = Backoff(attempts=1, first_delay=0, max_delay=0, jitter=0)


def call(provider: str, operation: str, error: BaseException | None = None, classify=None):
    """One observed call that returns, or raises `error` (swallowed here)."""
    try:
        with observe_provider_call(provider, operation, classify):
            if error is not None:
                raise error
    except BaseException as exc:
        if exc is not error:
            raise


def counts(tally) -> dict[tuple[str, str, str], int]:
    return {key: h.count for key, h in tally.series().items()}


def test_calls_in_the_batch_threads_count_in_the_callers_tally_only():
    def handle(n: int) -> dict:
        call("stripe", "PaymentIntentService.create")
        return {}

    call("stripe", "PaymentIntentService.create")  # before: no tally open
    with tally_provider_calls() as outer:
        with tally_provider_calls() as inner:
            process_items(
                [Item(f"payment:t:{i}", i) for i in range(12)],
                handle,
                concurrency=4,
                backoff=ONE_TRY,
            )
        call("smtp", "send")
    call("smtp", "send")  # after: closed

    assert counts(inner) == {("stripe", "PaymentIntentService.create", "ok"): 12}
    assert counts(outer) == {
        ("stripe", "PaymentIntentService.create", "ok"): 12,
        ("smtp", "send", "ok"): 1,
    }


@pytest.mark.parametrize(
    ("provider", "error", "classify", "outcome"),
    [
        (
            "stripe",
            stripe.CardError("declined", None, "card_declined", 402),
            classify_stripe_error,
            "permanent",
        ),
        ("stripe", stripe.APIError("boom", http_status=500), classify_stripe_error, "transient"),
        ("stripe", KeyError("not a Stripe error"), classify_stripe_error, "unexpected"),
        ("smtp", smtplib.SMTPServerDisconnected("gone"), classify_smtp_error, "transient"),
        (
            "smtp",
            smtplib.SMTPResponseException(550, b"no such user"),
            classify_smtp_error,
            "permanent",
        ),
        ("webhook", httpx.ConnectError("refused"), classify_transport_error, "transient"),
        ("webhook", ValueError("a bug"), classify_transport_error, "unexpected"),
        ("solana", TransientError("blockhash expired"), None, "transient"),
    ],
)
def test_an_error_counts_under_its_failure_class(provider, error, classify, outcome):
    with tally_provider_calls() as tally:
        call(provider, "op", error, classify)
    assert counts(tally) == {(provider, "op", outcome): 1}


@pytest.mark.parametrize(
    ("status", "outcome"), [(503, "transient"), (429, "transient"), (410, "permanent")]
)
def test_a_call_answered_with_an_error_status_counts_as_an_error(status, outcome):
    with tally_provider_calls() as tally:
        with observe_provider_call("webhook", "deliver", classify_transport_error) as answered:
            answered.failed(status_error(status))
        with observe_provider_call("webhook", "deliver", classify_transport_error):
            pass
    assert counts(tally) == {("webhook", "deliver", outcome): 1, ("webhook", "deliver", "ok"): 1}


def test_a_tally_read_back_with_other_buckets_is_left_out():
    with tally_provider_calls() as tally:
        call("smtp", "send")
    recorded = tally.as_json()
    assert {k: h.counts for k, h in tally_from_json(recorded).items()} == {
        k: h.counts for k, h in tally.series().items()
    }
    assert tally_from_json({**recorded, "buckets": [1.0, 2.0]}) == {}
    assert tally_from_json({"buckets": list(LATENCY_BUCKETS), "calls": [["smtp"]]}) == {}

    totals = Totals(provider_calls=tally_from_json(recorded))
    stored = totals.as_json()
    assert Totals.from_json(stored).provider_calls == totals.provider_calls
    stored["provider_calls"]["buckets"] = [1.0]
    assert Totals.from_json(stored).provider_calls == {}
