"""Webhooks to the platform's services, signed per Standard Webhooks, over httpx."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from queue_pipelines.failures import PermanentError, ProviderError, TransientError
from queue_pipelines.providers import webhook_signing as signing
from queue_pipelines.telemetry.provider_calls import observe_provider_call

log = logging.getLogger("queue_pipelines.webhooks")

# Worth another try: the receiver timed out, is rate limiting, or is failing on its side.
RETRYABLE_STATUSES = frozenset({408, 429})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def describe_url(url: str) -> str:
    """Scheme, host and path only: a query string may carry a receiver's token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"


def classify_transport_error(exc: BaseException) -> TransientError | None:
    """A network failure is worth another try (deliver retries it); anything else is not
    the receiver's doing."""
    if isinstance(exc, httpx.TransportError):
        return TransientError(f"{type(exc).__name__}: {exc}", code="connection")
    return None


def status_error(status: int) -> ProviderError:
    """The failure class of a receiver's answer other than 2xx, for the call metrics."""
    error = TransientError if is_retryable_status(status) else PermanentError
    return error(f"HTTP {status}", code=f"http_{status}")


@dataclass(frozen=True)
class WebhookDelivery:
    status: int
    attempts: int


@dataclass(frozen=True)
class WebhookSender:
    """Signs and POSTs webhook bodies, retrying what a retry can fix."""

    secret: str
    timeout_seconds: float = 15.0
    max_attempts: int = 4
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0

    def deliver(self, url: str, webhook_id: str, body: bytes) -> WebhookDelivery:
        """POST `body` until a 2xx; retries 408, 429, 5xx and network errors with backoff,
        gives up at once on any other answer. Each attempt is signed with its own timestamp."""
        try:
            signing.secret_key(self.secret)
        except ValueError as exc:  # a configuration error: no retry will fix it
            raise PermanentError(f"WEBHOOK_SECRET is not usable: {exc}", code="secret") from None
        where = describe_url(url)
        delay = self.backoff_seconds
        last = ""
        with httpx.Client(timeout=self.timeout_seconds, follow_redirects=False) as client:
            for attempt in range(1, self.max_attempts + 1):
                timestamp = int(time.time())
                headers = {
                    "content-type": "application/json",
                    "user-agent": "queue-pipelines-webhooks/1",
                    "webhook-id": webhook_id,
                    "webhook-timestamp": str(timestamp),
                    "webhook-signature": signing.sign(self.secret, webhook_id, timestamp, body),
                }
                pause = delay
                try:
                    with observe_provider_call(
                        "webhook", "deliver", classify_transport_error
                    ) as call:
                        response = client.post(url, content=body, headers=headers)
                        if not 200 <= response.status_code < 300:
                            call.failed(status_error(response.status_code))
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    if 200 <= response.status_code < 300:
                        return WebhookDelivery(response.status_code, attempt)
                    last = f"HTTP {response.status_code} {response.text[:200]!r}"
                    if not is_retryable_status(response.status_code):
                        raise PermanentError(
                            f"webhook {webhook_id} to {where} refused: {last} (not retried)",
                            code=f"http_{response.status_code}",
                        )
                    pause = _retry_after(response, delay)
                if attempt < self.max_attempts:
                    log.warning(
                        "webhook %s to %s, attempt %d of %d: %s",
                        webhook_id,
                        where,
                        attempt,
                        self.max_attempts,
                        last,
                    )
                    time.sleep(min(pause, self.max_backoff_seconds))
                    delay *= 2
        raise TransientError(
            f"webhook {webhook_id} to {where} failed {self.max_attempts} times, last: {last}",
            code="webhook_unavailable",
        )


def _retry_after(response: httpx.Response, default: float) -> float:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else default
