"""POST /v1/webhooks/stripe: verify Stripe's signature, keep the events reconciliation needs,
and enqueue each event id once for stripe_event_job."""

from __future__ import annotations

import json
import time
from typing import Any

import stripe
from pydantic import TypeAdapter, ValidationError

from queue_pipelines.intake.payloads import STRIPE_EVENT_TYPES, StripeEventPayload
from queue_pipelines.intake.schema import (
    Envelope,
    EnvelopeError,
    Identifier,
    describe_validation_error,
    envelope_from_dict,
)

# Events whose object carries no tenant of ours (made outside this service) go here.
UNKNOWN_TENANT = "stripe"
# The envelope's own rule for tenant ids, so that the two cannot drift apart.
_TENANT_ID = TypeAdapter(Identifier)


class WebhookRejected(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _signed_timestamp(signature: str) -> int:
    """The `t=` of a header the SDK has accepted, read the way the SDK reads it (the first
    `t`, up to a second `=`)."""
    for part in signature.split(","):
        fields = part.split("=", 2)
        if fields[0] == "t" and len(fields) > 1:
            try:
                return int(fields[1])
            except ValueError:
                break
    raise WebhookRejected("signature verification failed: malformed Stripe-Signature header")


def verify_event(
    payload: bytes, signature: str | None, secret: str, tolerance: int, now: float | None = None
) -> dict:
    """The event, once the stripe SDK has checked `Stripe-Signature` (HMAC over the timestamp
    and the exact bytes) and that the timestamp is within `tolerance` seconds of now, in
    either direction (the SDK looks only at the past, and skips the check for 0)."""
    if tolerance <= 0:
        raise ValueError("a tolerance of 0 or less would switch the replay check off")
    if not signature:
        raise WebhookRejected("missing Stripe-Signature header")
    try:
        stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance=tolerance)
    except stripe.SignatureVerificationError as exc:
        raise WebhookRejected(f"signature verification failed: {exc.user_message or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookRejected(f"invalid payload: {exc}") from None
    current = time.time() if now is None else now
    if _signed_timestamp(signature) > current + tolerance:
        raise WebhookRejected(
            "signature verification failed: timestamp is in the future, beyond the tolerance"
        )
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # bad JSON, 5,000-digit numbers, deep nesting
        raise WebhookRejected(f"invalid payload: not JSON: {str(exc)[:200]}") from None
    if not isinstance(event, dict):
        raise WebhookRejected(f"invalid payload: an event is a JSON object, not {_kind(event)}")
    return event


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _string_metadata(obj: dict[str, Any]) -> dict[str, str]:
    metadata = obj.get("metadata") or {}
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


def _payment_intent_of(obj: dict[str, Any]) -> str | None:
    if obj.get("object") == "payment_intent":
        return obj.get("id")
    intent = obj.get("payment_intent")
    return intent.get("id") if isinstance(intent, dict) else intent


def summarize_event(event: dict[str, Any]) -> StripeEventPayload:
    """The fields reconciliation reads; the full object stays in Stripe. A signed event of
    another shape raises EnvelopeError naming the field."""
    if not isinstance(event.get("id"), str):
        raise EnvelopeError("event: 'id' is missing or not a string")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise EnvelopeError("event: 'data.object' is missing or not an object")
    created = event.get("created", 0)
    if type(created) is not int:
        raise EnvelopeError(f"event: 'created' must be an integer, got {_kind(created)}")
    obj = data["object"]
    error = obj.get("last_payment_error") or {}
    reason = error.get("message") if isinstance(error, dict) else None
    if event["type"] == "charge.dispute.created":
        reason = obj.get("reason")
    return StripeEventPayload(
        event_id=event["id"],
        event_type=event["type"],
        created=created,
        livemode=event.get("livemode") is True,
        object_id=str(obj.get("id") or ""),
        payment_intent_id=_payment_intent_of(obj),
        amount=obj.get("amount"),
        amount_refunded=obj.get("amount_refunded"),
        currency=obj.get("currency"),
        status=obj.get("status"),
        reason=(reason or None) and str(reason)[:1000],
        metadata=_string_metadata(obj),
    )


def event_envelope(event: dict[str, Any]) -> Envelope | None:
    """The intake envelope for a verified event; None for event types we do not reconcile."""
    if event.get("type") not in STRIPE_EVENT_TYPES:
        return None
    try:
        payload = summarize_event(event)
    except ValidationError as exc:
        raise EnvelopeError(describe_validation_error(exc, prefix="payload")) from None
    tenant = payload.metadata.get("tenant_id", "")
    try:
        tenant = _TENANT_ID.validate_python(tenant)
    except ValidationError:
        tenant = UNKNOWN_TENANT
    return envelope_from_dict(
        {
            "type": "stripe_event",
            "version": 1,
            "tenant_id": tenant,
            "idempotency_key": payload.event_id,
            "payload": payload.model_dump(mode="json", exclude_none=True),
        }
    )
