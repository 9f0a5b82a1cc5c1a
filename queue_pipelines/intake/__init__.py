"""The intake: producers put job requests here, the sensors take them out.

from queue_pipelines.intake import connect, Envelope, PaymentPayload

intake = connect()  # REDIS_URL, or the embedded Redis of `make run`
entry_id = intake.enqueue(Envelope(
    type="payment", tenant_id="acme", idempotency_key="order-1042",
    payload=PaymentPayload(order_id="1042", amount=2500, currency="usd",
                           customer_email="ada@example.com",
                           payment_method="pm_card_visa"),
))
"""

from __future__ import annotations

from queue_pipelines.intake.connection import redis_client
from queue_pipelines.intake.payloads import (
    MintPayload,
    NotificationPayload,
    PaymentPayload,
    RefundPayload,
)
from queue_pipelines.intake.schema import (
    Envelope,
    EnvelopeError,
    envelope_from_dict,
    parse_envelope,
)
from queue_pipelines.intake.streams import IntakeStreams
from queue_pipelines.settings import load


def connect(url: str | None = None, prefix: str = "qp") -> IntakeStreams:
    """The intake at `url`, REDIS_URL, or the embedded Redis, in that order."""
    return IntakeStreams(redis_client(url or load().intake_redis_url), prefix=prefix)


__all__ = [
    "Envelope",
    "EnvelopeError",
    "IntakeStreams",
    "MintPayload",
    "NotificationPayload",
    "PaymentPayload",
    "RefundPayload",
    "connect",
    "envelope_from_dict",
    "parse_envelope",
]
