"""One payload model per job type: the `payload` of an intake envelope (docs/intake.md).

Part of the public wire format; imports nothing from Dagster so that producers load it fast.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from queue_pipelines.currencies import STRIPE_CURRENCIES
from queue_pipelines.intake.notification_context import context_problems
from queue_pipelines.intake.text_fields import (
    MailAddress,
    MultiLineText,
    SingleLineText,
    multi_line_text,
    single_line_text,
    text_metadata,
)

# Stripe rejects amounts with more than eight digits in the smallest currency unit.
MAX_AMOUNT = 99_999_999

Identifier = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
Amount = Annotated[int, Field(gt=0, le=MAX_AMOUNT, strict=True)]
Metadata = text_metadata(20)
# A buyer's name goes into a mail header (To: name <address>): one line.
PersonName = single_line_text(256)


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def solana_address(value: str | None) -> str | None:
    """`value` if it is a Solana address (base58 of 32 bytes); None stays None."""
    if value is None:
        return None
    if not re.fullmatch(r"[1-9A-HJ-NP-Za-km-z]{32,44}", value):
        raise ValueError("not a base58 Solana address")
    # The alphabet and length alone let through strings that decode to 31 or 33 bytes.
    # solders loads the whole Solana binding: only NFT requests pay for it.
    from solders.pubkey import Pubkey

    try:
        Pubkey.from_string(value)
    except ValueError:
        raise ValueError("not a base58 Solana address: does not decode to 32 bytes") from None
    return value


class PaymentPayload(WireModel):
    """Charge a card: a Stripe PaymentIntent, created and confirmed at once."""

    order_id: Identifier
    amount: Amount = Field(description="In the currency's smallest unit (cents for usd).")
    currency: str = Field(description="Lower-case ISO 4217 code that Stripe supports.")
    customer_email: MailAddress
    customer_name: PersonName | None = None
    payment_method: str = Field(
        min_length=3,
        max_length=255,
        pattern=r"^pm_[A-Za-z0-9_]+$",
        description="A Stripe PaymentMethod id collected by the front end (pm_...).",
    )
    description: multi_line_text(1000) | None = None
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


class RefundPayload(WireModel):
    """Refund a PaymentIntent in full (no amount) or in part."""

    payment_intent_id: str = Field(pattern=r"^pi_[A-Za-z0-9_]+$")
    amount: Amount | None = Field(default=None, description="Omit to refund what remains.")
    reason: Literal["duplicate", "fraudulent", "requested_by_customer"] | None = None
    order_id: Identifier | None = None
    metadata: Metadata = Field(default_factory=dict)


class TicketAttributes(WireModel):
    event: SingleLineText = Field(min_length=1, max_length=200)
    venue: SingleLineText = Field(min_length=1, max_length=200)
    seat: SingleLineText = Field(min_length=1, max_length=64)
    date: SingleLineText = Field(
        min_length=1, max_length=64, description="ISO 8601 date or date-time."
    )


class MintPayload(WireModel):
    """Mint a ticket NFT to the buyer's wallet (mint_job, docs/nft.md)."""

    order_id: Identifier
    wallet: str = Field(description="The buyer's Solana address, base58.")
    name: SingleLineText = Field(min_length=1, max_length=32)
    symbol: SingleLineText = Field(min_length=1, max_length=10)
    description: MultiLineText = Field(default="", max_length=2000)
    image: single_line_text(200) | None = None
    uri: single_line_text(200) | None = None
    attributes: TicketAttributes
    standard: Literal["token-2022", "metaplex", "compressed"] = Field(
        default="token-2022",
        description="token-2022 (the default), metaplex (Token Metadata) or compressed "
        "(Bubblegum); metaplex and compressed need their programs on the cluster (docs/nft.md).",
    )
    seller_fee_basis_points: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="Royalty on resales, metaplex and compressed standards only.",
    )
    collection: str | None = Field(
        default=None,
        description="Collection mint, base58, metaplex and compressed standards only (joins "
        "unverified).",
    )
    buyer_email: MailAddress | None = Field(
        default=None, description="Where the 'your ticket is in your wallet' e-mail goes."
    )
    buyer_name: PersonName | None = None

    @field_validator("wallet", "collection")
    @classmethod
    def _base58_address(cls, value: str | None) -> str | None:
        return solana_address(value)

    @field_validator("name", "symbol")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class TransferPayload(WireModel):
    """Move a ticket NFT to a new owner after a resale (nft_transfer_job, docs/nft.md).

    Only a ticket this service minted for the same tenant, held by a wallet the service
    holds the key to (custodial), can be moved."""

    mint: str = Field(description="The ticket's mint address, base58 (a mint's `mint`).")
    to_wallet: str = Field(description="The new owner's Solana address, base58.")
    from_wallet: str | None = Field(
        default=None,
        description="The seller's address, base58: the transfer is refused if someone else "
        "holds the ticket.",
    )
    order_id: Identifier | None = Field(default=None, description="The resale's order.")
    standard: Literal["token-2022", "metaplex", "compressed"] = Field(
        default="token-2022",
        description="The standard the ticket was minted with: compressed for a Bubblegum "
        "ticket, whose `mint` is then its asset id; token-2022 and metaplex tickets move alike.",
    )
    metadata: Metadata = Field(
        default_factory=dict,
        description="The platform's own notes, at most 20 string values; never on chain.",
    )

    @field_validator("mint", "to_wallet", "from_wallet")
    @classmethod
    def _base58_address(cls, value: str | None) -> str | None:
        return solana_address(value)


# Metadata keys the service writes on a Stripe customer itself: `tenant_id` is who owns it
# (a producer setting it could hand its customer to another tenant, or claim one).
RESERVED_CUSTOMER_METADATA = ("tenant_id", "idempotency_key")


class CustomerPayload(WireModel):
    """Create, update or delete one of the tenant's Stripe customers (customer_job,
    docs/intake.md). A tenant acts only on customers it created: Stripe's metadata `tenant_id`
    names the owner, and an update or delete of anyone else's is refused."""

    action: Literal["create", "update", "delete"]
    customer_id: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^cus_[A-Za-z0-9_]+$",
        description="The Stripe customer (cus_...): required to update or delete, absent to "
        "create.",
    )
    email: MailAddress | None = Field(
        default=None,
        description="Required to create: payments find a tenant's customer by e-mail.",
    )
    name: PersonName | None = None
    metadata: Metadata = Field(
        default_factory=dict,
        description="The platform's own notes, at most 20; on update, merged into the "
        "customer's (an empty value removes a key). `tenant_id` and `idempotency_key` are the "
        "service's own and refused.",
    )

    @field_validator("metadata")
    @classmethod
    def _not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(set(value) & set(RESERVED_CUSTOMER_METADATA))
        if reserved:
            raise ValueError(f"metadata key(s) {', '.join(reserved)} are set by the service")
        return value

    @model_validator(mode="after")
    def _fields_for_action(self) -> CustomerPayload:
        changes = self.email is not None or self.name is not None or bool(self.metadata)
        if self.action == "create":
            if self.customer_id is not None:
                raise ValueError("create takes no customer_id: Stripe assigns it")
            if self.email is None:
                raise ValueError("create needs an email")
        elif self.customer_id is None:
            raise ValueError(f"{self.action} needs the customer_id (cus_...)")
        elif self.action == "update" and not changes:
            raise ValueError("update needs at least one of email, name, metadata")
        elif self.action == "delete" and changes:
            raise ValueError("delete takes only the customer_id")
        return self


# Templates a producer may ask for. Internal ones (operator_alert) are sent by the jobs
# themselves to the operators' address and are never accepted from the intake.
TENANT_TEMPLATES = ("payment_confirmation", "payment_failed", "refund_issued", "nft_delivered")
INTERNAL_TEMPLATES = ("operator_alert",)
# `context` is template data: flat values and small records, never deep trees.
MAX_CONTEXT_DEPTH = 8


def json_depth(value: Any, limit: int) -> int:
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


class NotificationPayload(WireModel):
    """Send one templated message (notification_job)."""

    template: Literal["payment_confirmation", "payment_failed", "refund_issued", "nft_delivered"]
    recipient: MailAddress
    context: dict[str, Any] = Field(
        default_factory=dict,
        description="Only the template's own fields, each a string of limited length and no "
        "links (docs/notifications.md, 'What a producer may put in context').",
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
        if json_depth(value, MAX_CONTEXT_DEPTH) > MAX_CONTEXT_DEPTH:
            raise ValueError(f"nested deeper than {MAX_CONTEXT_DEPTH} levels")
        return value

    @field_validator("context")
    @classmethod
    def _template_fields(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        template = info.data.get("template")  # absent when the template itself was refused
        problems = context_problems(template, value) if template else []
        if problems:
            raise ValueError("; ".join(problems))
        return value


STRIPE_EVENT_TYPES = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.refunded",
    "charge.dispute.created",
)


class StripeEventPayload(WireModel):
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
    object_id: SingleLineText = Field(
        min_length=1, max_length=255, description="pi_..., ch_... or dp_..."
    )
    payment_intent_id: str | None = Field(default=None, pattern=r"^pi_[A-Za-z0-9_]+$")
    amount: int | None = Field(default=None, ge=0)
    amount_refunded: int | None = Field(default=None, ge=0)
    currency: single_line_text(3) | None = None
    status: single_line_text(64) | None = None
    reason: multi_line_text(1000) | None = Field(
        default=None, description="Failure message or dispute reason."
    )
    metadata: Annotated[dict[str, str], Field(max_length=50)] = Field(default_factory=dict)
