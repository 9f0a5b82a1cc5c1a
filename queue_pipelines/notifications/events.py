"""What each job outcome tells the buyer (template context) and the platform (webhook event)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from queue_pipelines.currencies import format_amount
from queue_pipelines.intake.notification_context import TEMPLATE_FIELDS, field_problem
from queue_pipelines.intake.payloads import NotificationPayload, PaymentPayload
from queue_pipelines.intake.registry import SPECS
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.payments import PaymentOutcome, RefundOutcome


@dataclass(frozen=True)
class Notice:
    """One outcome, told twice: an e-mail to `recipient` and a webhook of `event_type`."""

    tenant_id: str
    idempotency_key: str
    template: str
    recipient: str | None  # None: no e-mail address known, the e-mail step says so and skips
    recipient_name: str | None
    context: dict[str, Any]
    webhook_kind: str  # the job type's (registry): picks the endpoint
    event_type: str
    event_data: dict[str, Any]


def buyer_greeting_name(name: str | None, email: str | None) -> str:
    if name and name.strip():
        return name.strip()
    return (email or "").split("@", 1)[0] or "there"


def payment_notice(
    tenant_id: str, idempotency_key: str, payment: PaymentPayload, outcome: PaymentOutcome
) -> Notice:
    email = str(payment.customer_email)
    return Notice(
        tenant_id=tenant_id,
        idempotency_key=idempotency_key,
        template="payment_confirmation",
        recipient=email,
        recipient_name=payment.customer_name,
        context={
            "buyer_name": buyer_greeting_name(payment.customer_name, email),
            "order_id": payment.order_id,
            "amount": outcome.display_amount,
            "payment_id": outcome.payment_intent_id,
        },
        webhook_kind=SPECS["payment"].webhook_kind,
        event_type="payment.succeeded",
        event_data={
            "tenant_id": tenant_id,
            "idempotency_key": idempotency_key,
            "order_id": payment.order_id,
            "payment_intent_id": outcome.payment_intent_id,
            "amount": outcome.amount,
            "currency": outcome.currency,
            "status": outcome.status,
        },
    )


def refund_notice(
    tenant_id: str,
    idempotency_key: str,
    order_id: str | None,
    outcome: RefundOutcome,
    buyer_email: str | None,
    buyer_name: str | None,
) -> Notice:
    return Notice(
        tenant_id=tenant_id,
        idempotency_key=idempotency_key,
        template="refund_issued",
        recipient=buyer_email,
        recipient_name=buyer_name,
        context={
            "buyer_name": buyer_greeting_name(buyer_name, buyer_email),
            # No order id: the mail names the payment, never calls a pi_... an order.
            "order_id": order_id,
            "payment_id": outcome.payment_intent_id,
            "amount": format_amount(outcome.amount, outcome.currency),
            "refund_id": outcome.refund_id,
        },
        webhook_kind=SPECS["refund"].webhook_kind,
        event_type="refund.issued",
        event_data={
            "tenant_id": tenant_id,
            "idempotency_key": idempotency_key,
            "order_id": order_id,
            "refund_id": outcome.refund_id,
            "payment_intent_id": outcome.payment_intent_id,
            "amount": outcome.amount,
            "currency": outcome.currency,
            "remaining_refundable": outcome.remaining,
            "status": outcome.status,
        },
    )


@dataclass(frozen=True)
class NftDelivery:
    """What a mint step hands to the NFT notification steps (see docs/notifications.md)."""

    tenant_id: str
    idempotency_key: str
    order_id: str
    wallet: str
    mint_address: str
    event: str
    seat: str
    buyer_email: str | None = None
    buyer_name: str | None = None
    signature: str | None = None  # the mint transaction


def explorer_link(template: str, address: str) -> str:
    return template.format(address=address)


def nft_notice(delivery: NftDelivery, explorer_url_template: str) -> Notice:
    url = explorer_link(explorer_url_template, delivery.mint_address)
    return Notice(
        tenant_id=delivery.tenant_id,
        idempotency_key=delivery.idempotency_key,
        template="nft_delivered",
        recipient=delivery.buyer_email,
        recipient_name=delivery.buyer_name,
        context={
            "buyer_name": buyer_greeting_name(delivery.buyer_name, delivery.buyer_email),
            "order_id": delivery.order_id,
            "event": delivery.event,
            "seat": delivery.seat,
            "wallet": delivery.wallet,
            "explorer_url": url,
        },
        webhook_kind=SPECS["mint"].webhook_kind,
        event_type="nft.delivered",
        event_data={
            "tenant_id": delivery.tenant_id,
            "idempotency_key": delivery.idempotency_key,
            "order_id": delivery.order_id,
            "wallet": delivery.wallet,
            "mint_address": delivery.mint_address,
            "signature": delivery.signature,
            "explorer_url": url,
        },
    )


def payment_failed_request(
    tenant_id: str, idempotency_key: str, payment: PaymentPayload, reason: str
) -> Envelope:
    """The notification request that tells a buyer their card was declined: sent by
    notification_job, once per payment request (its key is derived from the payment's)."""
    key = f"payment-failed:{idempotency_key}"
    if len(key) > 255:  # the envelope's limit; a digest keeps it unique
        key = "payment-failed:" + hashlib.sha256(key.encode()).hexdigest()
    email = str(payment.customer_email)
    # The request meets the notification intake's rules like any other (no links, limited
    # lengths); a value the payment allowed but a notification does not is replaced, since
    # failing here would leave the buyer of a declined card untold.
    fields = TEMPLATE_FIELDS["payment_failed"]

    def fit(name: str, value: str, replacement: str) -> str:
        return value if field_problem(fields[name], value) is None else replacement

    return Envelope(
        type="notification",
        tenant_id=tenant_id,
        idempotency_key=key,
        payload=NotificationPayload(
            template="payment_failed",
            recipient=email,
            context={
                "buyer_name": fit(
                    "buyer_name", buyer_greeting_name(payment.customer_name, email), "there"
                ),
                # An order id shaped like a domain (order.com) loses its dots.
                "order_id": fit("order_id", payment.order_id, payment.order_id.replace(".", "-")),
                "amount": fit(
                    "amount",
                    format_amount(payment.amount, payment.currency),
                    f"{payment.amount} {payment.currency.upper()}",
                ),
                "reason": fit("reason", reason, "the card was declined"),
            },
        ),
    )
