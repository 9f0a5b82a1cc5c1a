"""Webhooks to the platform's services, signed per Standard Webhooks, over httpx."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from queue_pipelines.failures import PermanentError, ProviderError, TransientError
from queue_pipelines.providers import webhook_signing as signing
from queue_pipelines.telemetry.provider_calls import observe_provider_call

# Worth another try: the receiver timed out, is rate limiting, or is failing on its side.
RETRYABLE_STATUSES = frozenset({408, 429})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def describe_url(url: str) -> str:
    """Scheme, host and path only: a query string may carry a receiver's token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"


def classify_transport_error(exc: BaseException) -> TransientError | None:
    """A network failure is worth another try; anything else is not the receiver's doing."""
    if isinstance(exc, httpx.TransportError):
        return TransientError(f"{type(exc).__name__}: {exc}", code="connection")
    return None


def status_error(status: int) -> ProviderError:
    """The failure class of a receiver's answer other than 2xx."""
    error = TransientError if is_retryable_status(status) else PermanentError
    return error(f"HTTP {status}", code=f"http_{status}")


@dataclass(frozen=True)
class WebhookSender:
    """Signs and POSTs webhook bodies: one try each, its failure classified. Retrying a
    transient failure is the request's backoff's to do (queue_pipelines/request_runner.py)."""

    secret: str
    timeout_seconds: float = 15.0

    def deliver(self, url: str, webhook_id: str, body: bytes) -> int:
        """POST `body` once, signed with the current time; returns the receiver's 2xx status.
        408, 429, 5xx and network errors raise TransientError, any other answer
        PermanentError."""
        try:
            signing.secret_key(self.secret)
        except ValueError as exc:  # a configuration error: no retry will fix it
            raise PermanentError(f"WEBHOOK_SECRET is not usable: {exc}", code="secret") from None
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "queue-pipelines-webhooks/1",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signing.sign(self.secret, webhook_id, timestamp, body),
        }
        where = describe_url(url)
        try:
            with (
                httpx.Client(timeout=self.timeout_seconds, follow_redirects=False) as client,
                observe_provider_call("webhook", "deliver", classify_transport_error) as call,
            ):
                response = client.post(url, content=body, headers=headers)
                if not 200 <= response.status_code < 300:
                    call.failed(status_error(response.status_code))
        except httpx.TransportError as exc:
            raise TransientError(
                f"webhook {webhook_id} to {where} failed: {type(exc).__name__}: {exc}",
                code="connection",
            ) from exc
        if 200 <= response.status_code < 300:
            return response.status_code
        answer = f"HTTP {response.status_code} {response.text[:200]!r}"
        if is_retryable_status(response.status_code):
            raise TransientError(
                f"webhook {webhook_id} to {where} failed: {answer}",
                code=f"http_{response.status_code}",
            )
        raise PermanentError(
            f"webhook {webhook_id} to {where} refused: {answer} (not retried)",
            code=f"http_{response.status_code}",
        )
