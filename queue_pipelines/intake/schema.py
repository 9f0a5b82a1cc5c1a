"""The intake wire format: the envelope every producer writes, and one payload per job type.

This module is the contract other services depend on (docs/intake.md). It imports nothing
from Dagster so that producers load it fast.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    field_validator,
)
from solders.pubkey import Pubkey

from queue_pipelines.currencies import STRIPE_CURRENCIES

ENVELOPE_VERSION = 1
SUPPORTED_VERSIONS = frozenset({ENVELOPE_VERSION})
JOB_TYPES = ("payment", "refund", "mint", "notification", "stripe_event")
MAX_ENVELOPE_BYTES = 64 * 1024
# No field of the envelope nests deeper than this; deeper input is refused before validation
# (pydantic and json would otherwise recurse until Python's own limit).
MAX_JSON_DEPTH = 16
# Stripe rejects amounts with more than eight digits in the smallest currency unit.
MAX_AMOUNT = 99_999_999

JobType = Literal["payment", "refund", "mint", "notification", "stripe_event"]
Identifier = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
Amount = Annotated[int, Field(gt=0, le=MAX_AMOUNT, strict=True)]
Metadata = Annotated[dict[str, str], Field(max_length=20)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PaymentPayload(_Model):
    """Charge a card: a Stripe PaymentIntent, created and confirmed at once."""

    order_id: Identifier
    amount: Amount = Field(description="In the currency's smallest unit (cents for usd).")
    currency: str = Field(description="Lower-case ISO 4217 code that Stripe supports.")
    customer_email: EmailStr
    customer_name: str | None = Field(default=None, max_length=256)
    payment_method: str = Field(
        min_length=3,
        max_length=255,
        pattern=r"^pm_[A-Za-z0-9_]+$",
        description="A Stripe PaymentMethod id collected by the front end (pm_...).",
    )
    description: str | None = Field(default=None, max_length=1000)
    metadata: Metadata = Field(default_factory=dict)

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        code = value.lower()
        if code not in STRIPE_CURRENCIES:
            raise ValueError(
                f"unknown currency {value!r}: expected an ISO 4217 code Stripe supports"
            )
        return code


class RefundPayload(_Model):
    """Refund a PaymentIntent in full (no amount) or in part."""

    payment_intent_id: str = Field(pattern=r"^pi_[A-Za-z0-9_]+$")
    amount: Amount | None = Field(default=None, description="Omit to refund what remains.")
    reason: Literal["duplicate", "fraudulent", "requested_by_customer"] | None = None
    order_id: Identifier | None = None
    metadata: Metadata = Field(default_factory=dict)


class TicketAttributes(_Model):
    event: str = Field(min_length=1, max_length=200)
    venue: str = Field(min_length=1, max_length=200)
    seat: str = Field(min_length=1, max_length=64)
    date: str = Field(min_length=1, max_length=64, description="ISO 8601 date or date-time.")


class MintPayload(_Model):
    """Mint a ticket NFT to the buyer's wallet (mint_job, docs/nft.md)."""

    order_id: Identifier
    wallet: str = Field(description="The buyer's Solana address, base58.")
    name: str = Field(min_length=1, max_length=32)
    symbol: str = Field(min_length=1, max_length=10)
    description: str = Field(default="", max_length=2000)
    image: str | None = Field(default=None, max_length=200)
    uri: str | None = Field(default=None, max_length=200)
    attributes: TicketAttributes
    standard: Literal["token-2022", "metaplex"] = "token-2022"
    seller_fee_basis_points: int = Field(
        default=0, ge=0, le=10_000, description="Royalty on resales, metaplex standard only."
    )
    collection: str | None = Field(
        default=None,
        description="Collection mint, base58, metaplex standard only (joins unverified).",
    )
    buyer_email: EmailStr | None = Field(
        default=None, description="Where the 'your ticket is in your wallet' e-mail goes."
    )
    buyer_name: str | None = Field(default=None, max_length=256)

    @field_validator("wallet", "collection")
    @classmethod
    def _base58_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"[1-9A-HJ-NP-Za-km-z]{32,44}", value):
            raise ValueError("not a base58 Solana address")
        # The alphabet and length alone let through strings that decode to 31 or 33 bytes.
        try:
            Pubkey.from_string(value)
        except ValueError:
            raise ValueError("not a base58 Solana address: does not decode to 32 bytes") from None
        return value

    @field_validator("name", "symbol")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


# Templates a producer may ask for. Internal ones (operator_alert) are sent by the jobs
# themselves to the operators' address and are never accepted from the intake.
TENANT_TEMPLATES = ("payment_confirmation", "payment_failed", "refund_issued", "nft_delivered")
INTERNAL_TEMPLATES = ("operator_alert",)
# `context` is template data: flat values and small records, never deep trees.
MAX_CONTEXT_DEPTH = 8


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of JSON-like data, counting no further than `limit` + 1."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


class NotificationPayload(_Model):
    """Send one templated message (notification_job)."""

    template: Literal["payment_confirmation", "payment_failed", "refund_issued", "nft_delivered"]
    recipient: EmailStr
    context: dict[str, Any] = Field(
        default_factory=dict, description=f"Nested at most {MAX_CONTEXT_DEPTH} levels."
    )

    @field_validator("template", mode="before")
    @classmethod
    def _tenant_template(cls, value: Any) -> Any:
        if value in INTERNAL_TEMPLATES:
            raise ValueError(
                f"template {value!r} is internal (sent to operators by the jobs themselves); "
                f"the intake accepts {', '.join(TENANT_TEMPLATES)}"
            )
        return value

    @field_validator("context", mode="before")
    @classmethod
    def _shallow_context(cls, value: Any) -> Any:
        if _depth(value, MAX_CONTEXT_DEPTH) > MAX_CONTEXT_DEPTH:
            raise ValueError(f"nested deeper than {MAX_CONTEXT_DEPTH} levels")
        return value


STRIPE_EVENT_TYPES = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.refunded",
    "charge.dispute.created",
)


class StripeEventPayload(_Model):
    """A verified Stripe webhook event, reduced to what reconciliation reads. The gateway
    writes these (POST /v1/webhooks/stripe); the idempotency key is the event id."""

    event_id: str = Field(pattern=r"^evt_[A-Za-z0-9_]+$", max_length=255)
    event_type: Literal[
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "charge.refunded",
        "charge.dispute.created",
    ]
    created: int = Field(ge=0, description="Unix time Stripe created the event.")
    livemode: bool = False
    object_id: str = Field(min_length=1, max_length=255, description="pi_..., ch_... or dp_...")
    payment_intent_id: str | None = Field(default=None, pattern=r"^pi_[A-Za-z0-9_]+$")
    amount: int | None = Field(default=None, ge=0)
    amount_refunded: int | None = Field(default=None, ge=0)
    currency: str | None = Field(default=None, max_length=3)
    status: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(
        default=None, max_length=1000, description="Failure message or dispute reason."
    )
    metadata: Annotated[dict[str, str], Field(max_length=50)] = Field(default_factory=dict)


PAYLOAD_MODELS: dict[str, type[_Model]] = {
    "payment": PaymentPayload,
    "refund": RefundPayload,
    "mint": MintPayload,
    "notification": NotificationPayload,
    "stripe_event": StripeEventPayload,
}


class Envelope(_Model):
    """One job request. `payload` is validated against the model for `type`."""

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=64)
    type: JobType
    version: Literal[1] = Field(default=ENVELOPE_VERSION, description="Required on the wire.")
    tenant_id: Identifier
    idempotency_key: IdempotencyKey
    # strict: "7", true and 5.0 are not priorities.
    priority: int = Field(default=0, ge=-100, le=100, strict=True, description="Higher runs first.")
    created_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    payload: PaymentPayload | RefundPayload | MintPayload | NotificationPayload | StripeEventPayload

    @property
    def request_key(self) -> str:
        """Identity of the request: idempotency keys are scoped by job type and tenant."""
        return f"{self.type}:{self.tenant_id}:{self.idempotency_key}"

    def to_wire(self) -> str:
        """The JSON a stream entry carries; refuses what the sensor would reject for size."""
        wire = self.model_dump_json()
        size = len(wire.encode())
        if size > MAX_ENVELOPE_BYTES:
            raise EnvelopeError(
                f"envelope is {size} bytes, over the {MAX_ENVELOPE_BYTES}-byte limit"
            )
        return wire


class EnvelopeError(ValueError):
    """An entry that does not match the wire format; `reason` is what the dead letter says,
    `problems` the same one field at a time ({"field": ..., "message": ...})."""

    def __init__(self, reason: str, problems: list[dict[str, str]] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.problems = problems if problems is not None else [{"field": "", "message": reason}]


def parse_envelope(raw: str | bytes, expected_type: str | None = None) -> Envelope:
    """Validate one wire envelope, raising EnvelopeError with a readable reason."""
    if isinstance(raw, str):
        try:
            # Redis clients here decode with surrogateescape, so bytes that are not UTF-8
            # arrive as lone surrogates and fail this strict encode.
            raw = raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EnvelopeError(f"envelope is not valid UTF-8: {exc.reason}") from None
    size = len(raw)
    if size > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"envelope is {size} bytes, over the {MAX_ENVELOPE_BYTES}-byte limit")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        raise EnvelopeError(f"invalid JSON: {exc}") from None
    return envelope_from_dict(data, expected_type)


def envelope_from_dict(data: Any, expected_type: str | None = None) -> Envelope:
    if not isinstance(data, dict):
        raise EnvelopeError(f"envelope must be a JSON object, got {type(data).__name__}")
    if _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise EnvelopeError(f"envelope is nested deeper than {MAX_JSON_DEPTH} levels")
    # Version and type are checked first so that the reason names them, not a payload field.
    if "version" not in data:
        raise EnvelopeError(f"version: Field required (supported: {sorted(SUPPORTED_VERSIONS)})")
    version = data["version"]
    # `type(...) is int`: JSON's true and 1.0 compare equal to 1 in Python, but are not 1.
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise EnvelopeError(
            f"unsupported envelope version {version!r}: supported {sorted(SUPPORTED_VERSIONS)}"
        )
    job_type = data.get("type")
    if not isinstance(job_type, str) or job_type not in PAYLOAD_MODELS:
        raise EnvelopeError(
            f"unknown job type {job_type!r}: expected one of {', '.join(JOB_TYPES)}"
        )
    if expected_type is not None and job_type != expected_type:
        raise EnvelopeError(f"job type {job_type!r} does not belong on the {expected_type} stream")
    payload = data.get("payload")
    try:
        typed_payload = PAYLOAD_MODELS[job_type].model_validate(payload)
    except ValidationError as exc:
        raise EnvelopeError(
            describe_validation_error(exc, prefix="payload"),
            validation_problems(exc, prefix="payload"),
        ) from None
    try:
        return Envelope.model_validate({**data, "payload": typed_payload})
    except ValidationError as exc:
        raise EnvelopeError(describe_validation_error(exc), validation_problems(exc)) from None


def validation_problems(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """One {"field": "payload.amount", "message": ...} per problem."""
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
        problems.append({"field": location, "message": error["msg"].removeprefix("Value error, ")})
    return problems


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One problem per clause, 'field.path: message', the way a dead letter shows it."""
    return "; ".join(
        f"{p['field']}: {p['message']}" if p["field"] else p["message"]
        for p in validation_problems(exc, prefix)
    )


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the envelope, generated from the models (docs/intake.schema.json)."""
    schema = Envelope.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "queue-pipelines intake envelope, version 1"
    return schema
