"""Charging and refunding at most once per request: the rules, free of Dagster."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from queue_pipelines.currencies import format_amount
from queue_pipelines.failures import PermanentError, TransientError
from queue_pipelines.intake.payloads import PaymentPayload, RefundPayload
from queue_pipelines.ledger import Claim, EffectLedger, effect_key
from queue_pipelines.providers.stripe import (
    RefundableBalance,
    RefundSummary,
    StripeApi,
    UnknownCustomer,
)

# Stripe keeps an idempotency key for at least 24 hours; past that a replayed request could
# act again, so an attempt that never recorded its outcome is not resumed blindly.
STRIPE_IDEMPOTENCY_WINDOW = timedelta(hours=23)
CUSTOMER_KIND = "customer"


def stripe_idempotency_key(key: str) -> str:
    """Derived from the effect key: stable across attempts, short, and free of tenant data."""
    return "qp-" + hashlib.sha256(key.encode()).hexdigest()[:48]


def stripe_metadata(
    tenant_id: str, idempotency_key: str, order_id: str | None, extra: dict[str, str]
) -> dict[str, str]:
    metadata = dict(extra)
    metadata.update({"tenant_id": tenant_id, "idempotency_key": idempotency_key[:500]})
    if order_id:
        metadata["order_id"] = order_id
    return metadata


def customer_key(tenant_id: str, email: str) -> str:
    """The ledger row naming the tenant's Stripe customer for `email`, noted with the first
    payment that used it: later payments skip the lookup at Stripe (one call of two, and
    half of the rate limit's budget)."""
    return effect_key(CUSTOMER_KIND, tenant_id, email)


def _check_resumable(claim: Claim, now: datetime | None = None) -> None:
    if not claim.resumed:
        return
    age = (now or datetime.now(UTC)) - claim.created_at
    if age > STRIPE_IDEMPOTENCY_WINDOW:
        raise PermanentError(
            f"an attempt for {claim.effect_key} started {claim.created_at.isoformat()} never "
            "recorded its outcome, and Stripe's idempotency window has passed: reconcile it "
            "by hand in the Stripe dashboard before retrying",
            code="needs_reconciliation",
        )


def _give_up(ledger: EffectLedger, claim: Claim) -> None:
    """Stripe refused the request. After a first attempt that means nothing happened, so the
    claim goes and a later attempt starts afresh. After an attempt whose outcome is unknown
    the claim stays: it keeps the start of Stripe's idempotency window, past which nobody
    may retry blindly."""
    if claim.attempts == 1:
        ledger.release(claim.effect_key)


@dataclass(frozen=True)
class PaymentOutcome:
    payment_intent_id: str
    status: str
    amount: int
    currency: str
    customer_id: str
    replayed: bool = False  # True: recorded by an earlier attempt, no new charge

    @property
    def display_amount(self) -> str:
        return format_amount(self.amount, self.currency)


def charge_once(
    stripe: StripeApi,
    ledger: EffectLedger,
    *,
    tenant_id: str,
    idempotency_key: str,
    payment: PaymentPayload,
    run_id: str,
    run_is_live: Callable[[str], bool],
) -> PaymentOutcome:
    """Create and confirm the payment unless this request was already charged."""
    key = effect_key("payment", tenant_id, idempotency_key)
    claim = ledger.claim(key, "payment", run_id, run_is_live)
    if claim.done:
        return PaymentOutcome(**claim.result, replayed=True)
    _check_resumable(claim)
    email = str(payment.customer_email).lower()
    known = ledger.result_of(customer_key(tenant_id, email))
    try:
        customer_id = (
            known["customer_id"]
            if known
            else stripe.find_or_create_customer(
                tenant_id=tenant_id,
                email=email,
                name=payment.customer_name,
                idempotency_key=stripe_idempotency_key(f"customer:{key}"),
            )
        )
        intent = stripe.create_payment_intent(
            amount=payment.amount,
            currency=payment.currency,
            customer_id=customer_id,
            payment_method=payment.payment_method,
            description=payment.description,
            metadata=stripe_metadata(
                tenant_id, idempotency_key, payment.order_id, payment.metadata
            ),
            idempotency_key=stripe_idempotency_key(key),
        )
    except UnknownCustomer as exc:
        if not known:
            _give_up(ledger, claim)
            raise
        # Deleted at Stripe since we noted it: forget it; the retry looks the e-mail up again.
        ledger.forget_index(customer_key(tenant_id, email), CUSTOMER_KIND)
        raise TransientError(f"{exc.reason}; looking the customer up again", code=exc.code) from exc
    except PermanentError:
        _give_up(ledger, claim)
        raise
    outcome = PaymentOutcome(
        payment_intent_id=intent.id,
        status=intent.status,
        amount=intent.amount,
        currency=intent.currency,
        customer_id=customer_id,
    )
    # "processing" will settle on its own (Stripe's events report how): money may move, so it
    # is recorded like a success. Any other status moved no money.
    if intent.status not in {"succeeded", "processing"}:
        _give_up(ledger, claim)
        raise PermanentError(
            f"payment {intent.id} ended in status {intent.status!r}, not 'succeeded' "
            "(it needs customer action, which a background job cannot take)",
            code=intent.status,
        )
    ledger.record(
        key,
        {k: v for k, v in asdict(outcome).items() if k != "replayed"},
        index=None
        if known
        else (customer_key(tenant_id, email), CUSTOMER_KIND, {"customer_id": customer_id}),
    )
    return outcome


def check_refundable(amount: int, balance: RefundableBalance) -> None:
    """Refuse, permanently, a refund larger than what the charge still holds."""

    def fmt(value: int) -> str:
        return format_amount(value, balance.currency)

    refunded = f"{fmt(balance.refunded)} of {fmt(balance.captured)} already refunded"
    if amount > balance.remaining or balance.remaining == 0:
        raise PermanentError(
            f"refund of {fmt(amount)} exceeds the {fmt(balance.remaining)} still refundable "
            f"on {balance.payment_intent_id} ({refunded})",
            code="amount_too_large" if balance.remaining else "fully_refunded",
        )


@dataclass(frozen=True)
class RefundOutcome:
    refund_id: str
    status: str
    amount: int
    currency: str
    payment_intent_id: str
    remaining: int  # still refundable after this refund
    replayed: bool = False


def refund_once(
    stripe: StripeApi,
    ledger: EffectLedger,
    *,
    tenant_id: str,
    idempotency_key: str,
    refund: RefundPayload,
    run_id: str,
    run_is_live: Callable[[str], bool],
) -> RefundOutcome:
    """Refund `refund.amount` (or all that remains) unless this request was already refunded."""
    key = effect_key("refund", tenant_id, idempotency_key)
    claim = ledger.claim(key, "refund", run_id, run_is_live)
    if claim.done:
        return RefundOutcome(**claim.result, replayed=True)
    _check_resumable(claim)
    try:
        balance = stripe.refundable_balance(refund.payment_intent_id)
        if claim.resumed:
            # An earlier attempt may have refunded already; the balance then includes it and
            # would refuse the same refund again, so look for it first.
            earlier = stripe.find_refund(refund.payment_intent_id, idempotency_key)
            if earlier is not None:
                return _record_refund(ledger, key, earlier, balance.remaining)
        amount = refund.amount if refund.amount is not None else balance.remaining
        check_refundable(amount, balance)
        created = stripe.create_refund(
            payment_intent_id=refund.payment_intent_id,
            amount=amount,
            reason=refund.reason,
            metadata=stripe_metadata(tenant_id, idempotency_key, refund.order_id, refund.metadata),
            idempotency_key=stripe_idempotency_key(key),
        )
    except PermanentError:
        _give_up(ledger, claim)
        raise
    if created.status in {"failed", "canceled"}:
        _give_up(ledger, claim)
        raise PermanentError(
            f"refund {created.id} of {refund.payment_intent_id} ended {created.status!r}",
            code=created.status,
        )
    return _record_refund(ledger, key, created, balance.remaining - created.amount)


def _record_refund(
    ledger: EffectLedger, key: str, refund: RefundSummary, remaining: int
) -> RefundOutcome:
    outcome = RefundOutcome(
        refund_id=refund.id,
        status=refund.status,
        amount=refund.amount,
        currency=refund.currency,
        payment_intent_id=refund.payment_intent_id,
        remaining=remaining,
    )
    ledger.record(key, {k: v for k, v in asdict(outcome).items() if k != "replayed"})
    return outcome
