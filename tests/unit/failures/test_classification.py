"""Which failures are worth retrying: Stripe and SMTP errors classified, and how a batch's
request reads its error (batch.is_transient, batch.describe_error)."""

from __future__ import annotations

import smtplib
import ssl

import pytest
import redis
import sqlalchemy.exc
import stripe

from queue_pipelines.failures import PermanentError, ProviderError, SentBefore, TransientError
from queue_pipelines.ledger import EffectInFlight
from queue_pipelines.providers.smtp import classify_smtp_error
from queue_pipelines.providers.stripe import CardDeclined, classify_stripe_error
from queue_pipelines.request_runner import describe_error, is_transient


def error_body(message: str, **fields) -> dict:
    return {"error": {"message": message, **fields}}


# Stripe


def test_a_declined_card_is_permanent_and_names_the_decline_code():
    exc = stripe.CardError(
        "Your card was declined.",
        param=None,
        code="card_declined",
        http_status=402,
        json_body=error_body("Your card was declined.", decline_code="insufficient_funds"),
    )

    found = classify_stripe_error(exc)

    assert isinstance(found, CardDeclined) and found.permanent
    assert found.code == "insufficient_funds"
    assert found.reason == "card declined: Your card was declined. (insufficient_funds)"


def test_a_declined_card_without_a_decline_code_falls_back_to_the_error_code():
    exc = stripe.CardError("Expired.", param="exp_month", code="expired_card", http_status=402)
    found = classify_stripe_error(exc)
    assert isinstance(found, CardDeclined) and found.code == "expired_card"


@pytest.mark.parametrize(
    ("error", "status"), [(stripe.AuthenticationError, 401), (stripe.PermissionError, 403)]
)
def test_a_refused_key_is_permanent_and_quotes_nothing_from_stripe(error, status):
    exc = error(f"Invalid API Key provided: sk_test_****{'x' * 4}", http_status=status)

    found = classify_stripe_error(exc)

    assert found.permanent
    assert found.reason == f"Stripe refused the API key (HTTP {status}): check STRIPE_SECRET_KEY"
    assert "sk_" not in found.reason


@pytest.mark.parametrize(
    "exc",
    [
        stripe.RateLimitError("Too many requests", http_status=429),
        stripe.InvalidRequestError("Too many requests", param=None, http_status=429),
    ],
)
def test_429_is_transient_whatever_the_error_class(exc):
    found = classify_stripe_error(exc)
    assert not found.permanent
    assert found.reason == "Stripe rate limit (HTTP 429): Too many requests"
    assert found.code == "rate_limit"


@pytest.mark.parametrize("status", [500, 502, 503, None])
def test_5xx_and_no_status_are_transient(status):
    found = classify_stripe_error(stripe.APIError("upstream trouble", http_status=status))
    assert isinstance(found, TransientError)
    assert found.reason == f"Stripe server error (HTTP {status}): upstream trouble"


def test_a_connection_failure_is_transient():
    found = classify_stripe_error(stripe.APIConnectionError("Connection refused"))
    assert not found.permanent and found.code == "connection"
    assert found.reason == "could not reach Stripe: Connection refused"


def test_409_a_concurrent_request_with_the_same_key_is_transient():
    exc = stripe.InvalidRequestError(
        "in progress", param=None, code="lock_timeout", http_status=409
    )
    found = classify_stripe_error(exc)
    assert not found.permanent and found.code == "lock_timeout"
    assert found.reason == "Stripe request conflict (HTTP 409): in progress"


@pytest.mark.parametrize("status", [400, 409])
def test_an_idempotency_key_reused_with_other_parameters_says_stripe_saw_it_before(status):
    # An earlier call with the key reached Stripe: not a refusal that would release the claim.
    found = classify_stripe_error(stripe.IdempotencyError("Keys reused", http_status=status))
    assert isinstance(found, SentBefore) and not isinstance(found, PermanentError)
    assert found.code == "idempotency_error"
    assert found.reason == (
        "Stripe has this idempotency key from an earlier call with other parameters: Keys reused"
    )


@pytest.mark.parametrize("status", [400, 404])
def test_other_4xx_are_permanent(status):
    exc = stripe.InvalidRequestError(
        "No such payment_intent: 'pi_x'",
        param="intent",
        code="resource_missing",
        http_status=status,
        json_body=error_body("No such payment_intent: 'pi_x'"),
    )
    found = classify_stripe_error(exc)
    assert found.permanent and found.code == "resource_missing"
    assert (
        found.reason
        == f"Stripe rejected the request (HTTP {status}): No such payment_intent: 'pi_x'"
    )


# SMTP


@pytest.mark.parametrize(
    ("exc", "permanent", "code", "reason"),
    [
        (
            smtplib.SMTPRecipientsRefused({"a@example.com": (550, b"no such user")}),
            True,
            "rcpt",
            "SMTP server refused recipient a@example.com: 550 no such user",
        ),
        (
            smtplib.SMTPRecipientsRefused({"a@example.com": (452, b"mailbox full")}),
            False,
            "rcpt",
            "SMTP server refused recipient a@example.com: 452 mailbox full",
        ),
        (
            smtplib.SMTPSenderRefused(553, b"not allowed", "from@example.com"),
            True,
            "sender",
            "SMTP server refused sender from@example.com: 553 not allowed",
        ),
        (
            smtplib.SMTPAuthenticationError(535, b"bad credentials"),
            True,
            "auth",
            "SMTP login refused (535): check SMTP_USERNAME and SMTP_PASSWORD",
        ),
        (
            smtplib.SMTPDataError(421, b"try later"),
            False,
            "reply",
            "SMTP server replied 421 try later",
        ),
        (
            smtplib.SMTPDataError(554, b"rejected as spam"),
            True,
            "reply",
            "SMTP server replied 554 rejected as spam",
        ),
        (
            smtplib.SMTPNotSupportedError("STARTTLS"),
            True,
            "not_supported",
            "SMTP server does not support it: STARTTLS",
        ),
        (
            smtplib.SMTPServerDisconnected("gone"),
            False,
            "disconnected",
            "SMTP server closed the connection: gone",
        ),
        (TimeoutError("timed out"), False, "timeout", "SMTP server timed out: timed out"),
        (
            ConnectionRefusedError(111, "Connection refused"),
            False,
            "connection",
            "could not reach the SMTP server: [Errno 111] Connection refused",
        ),
        (ValueError("odd"), True, "unexpected", "SMTP failure: ValueError: odd"),
    ],
)
def test_smtp_failures_by_reply_code_and_kind(exc, permanent, code, reason):
    found = classify_smtp_error(exc)
    assert (found.permanent, found.code, found.reason) == (permanent, code, reason)


def test_an_untrusted_certificate_is_permanent_not_a_connection_problem():
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    found = classify_smtp_error(exc)
    assert found.permanent and found.code == "tls"


# a batch's view of any error


@pytest.mark.parametrize(
    "exc",
    [
        TransientError("Stripe 503"),
        EffectInFlight("payment:t:k", "run-1"),
        sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed")),
        redis.ConnectionError("reset"),
        redis.TimeoutError("slow"),
        ConnectionResetError("reset by peer"),
        TimeoutError("slow"),
    ],
)
def test_transient_errors(exc):
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        PermanentError("declined"),
        CardDeclined("declined"),
        ProviderError("odd", permanent=True),
        KeyError("bug"),
        ValueError("bug"),
        sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate")),
    ],
)
def test_permanent_errors_and_bugs_are_not_transient(exc):
    assert not is_transient(exc)


def test_describe_error_reads_a_provider_errors_reason_and_code():
    assert describe_error(PermanentError("card declined", code="card_declined")) == (
        "card declined",
        "card_declined",
    )
    assert describe_error(TransientError("Stripe 503")) == ("Stripe 503", "")


def test_describe_error_names_an_unexpected_errors_class():
    assert describe_error(KeyError("order_id")) == ("unexpected KeyError: 'order_id'", "unexpected")
