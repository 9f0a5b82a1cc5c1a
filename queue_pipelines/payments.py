"""Charging and refunding at most once per request: the rules, free of Dagster."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta

from queue_pipelines.currencies import format_amount
from queue_pipelines.effects import act_once
from queue_pipelines.failures import PermanentError, TransientError
from queue_pipelines.intake.payloads import PaymentPayload, RefundPayload
from queue_pipelines.ledger import Claim, EffectLedger, effect_key
from queue_pipelines.providers.stripe import (
    PaymentIntentSummary,
    RefundableBalance,
    RefundSummary,
    StripeApi,
    UnknownCustomer,
)

# "processing" settles on its own (Stripe's events report how): money may move, so it is
# recorded like a success. Any other status moved no money.
MONEY_MOVED = frozenset({"succeeded", "processing"})

CUSTOMER_KIND = "customer"
# The claim's note of the customers a payment's attempts named, written before each charge:
# the customer job may move the customer to another e-mail or delete it while the payment is
# in doubt, and then Stripe finds it by the buyer's e-mail no more.
CHARGED_CUSTOMERS = "customers"
# How far before a claim an earlier attempt's PaymentIntent is looked for (clocks differ).
IN_DOUBT_LOOKBACK = timedelta(hours=1)


def stripe_idempotency_key(key: str) -> str:
    """Derived from the effect key: stable across attempts, short, and free of tenant data."""
    return "qp-" + hashlib.sha256(key.encode()).hexdigest()[:48]


def charge_idempotency_key(key: str, payment: PaymentPayload, what: str = "") -> str:
    """Stripe's key for a charge's calls: the effect key and the payload. Every attempt of one
    request sends the same parameters under the same key; a dead letter replayed with a fixed
    payload (another card) is a new call, where Stripe would refuse the declined call's key
    used again with other parameters. The ledger, not this key, keeps a request from being
    charged twice (its claim is looked up at Stripe by metadata when in doubt)."""
    digest = hashlib.sha256(payment.model_dump_json().encode()).hexdigest()[:16]
    return stripe_idempotency_key(f"{what}{key}:{digest}")


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


class CustomerForgotten(TransientError):
    """Stripe refused the charge for naming a customer deleted since it was noted: nothing
    happened; the retry looks the customer up again."""

    def __init__(self, exc: UnknownCustomer):
        super().__init__(f"{exc.reason}; looking the customer up again", code=exc.code)


def _recordable(outcome: PaymentOutcome | RefundOutcome) -> dict:
    """What the ledger keeps of an outcome: all but whether this attempt replayed it."""
    return {k: v for k, v in asdict(outcome).items() if k != "replayed"}


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
    email = str(payment.customer_email).lower()
    # The customer noted by an earlier payment, looked up once and only if Stripe is called.
    noted_customer = functools.cache(lambda: ledger.result_of(customer_key(tenant_id, email)))

    def outcome_of(intent: PaymentIntentSummary, customer_id: str) -> dict:
        return _recordable(
            PaymentOutcome(
                payment_intent_id=intent.id,
                status=intent.status,
                amount=intent.amount,
                currency=intent.currency,
                customer_id=customer_id,
            )
        )

    # The customers this attempt named, in case Stripe answers that it saw the key before.
    named_now: list[str] = []

    def customers_named(claim: Claim) -> list[str]:
        named = [*claim.notes.get(CHARGED_CUSTOMERS, []), *named_now]
        if named:
            return list(dict.fromkeys(named))
        # A claim that noted none never reached the charge, or predates the notes: the
        # buyer's customer as a charge would find it.
        known = noted_customer()
        found = known["customer_id"] if known else stripe.find_customer(tenant_id, email)
        return [] if found is None else [found]

    def earlier_charge(claim: Claim) -> dict | None:
        # Each customer an attempt named, then its PaymentIntents carrying this request's
        # metadata.
        for customer_id in customers_named(claim):
            intent = stripe.find_payment_intent(
                customer_id,
                tenant_id=tenant_id,
                idempotency_key=idempotency_key,
                created_after=claim.created_at - IN_DOUBT_LOOKBACK,
            )
            if intent is not None and intent.status in MONEY_MOVED:
                return outcome_of(intent, customer_id)
        return None

    def charge() -> dict:
        known = noted_customer()
        try:
            customer_id = (
                known["customer_id"]
                if known
                else stripe.find_or_create_customer(
                    tenant_id=tenant_id,
                    email=email,
                    name=payment.customer_name,
                    idempotency_key=charge_idempotency_key(key, payment, "customer:"),
                )
            )
            named_now.append(customer_id)
            ledger.note(key, CHARGED_CUSTOMERS, customer_id)
            intent = stripe.create_payment_intent(
                amount=payment.amount,
                currency=payment.currency,
                customer_id=customer_id,
                payment_method=payment.payment_method,
                description=payment.description,
                metadata=stripe_metadata(
                    tenant_id, idempotency_key, payment.order_id, payment.metadata
                ),
                idempotency_key=charge_idempotency_key(key, payment),
            )
        except UnknownCustomer as exc:
            if not known:
                raise
            # Deleted at Stripe since we noted it: forget it; the retry looks it up again.
            ledger.forget_index(customer_key(tenant_id, email), CUSTOMER_KIND)
            raise CustomerForgotten(exc) from exc
        if intent.status not in MONEY_MOVED:
            raise PermanentError(
                f"payment {intent.id} ended in status {intent.status!r}, not 'succeeded' "
                "(it needs customer action, which a background job cannot take)",
                code=intent.status,
            )
        return outcome_of(intent, customer_id)

    def customer_index(result: dict) -> tuple[str, str, dict] | None:
        if noted_customer():
            return None
        return customer_key(tenant_id, email), CUSTOMER_KIND, {"customer_id": result["customer_id"]}

    effect = act_once(
        ledger,
        key,
        "payment",
        run_id,
        charge,
        in_doubt=earlier_charge,
        run_is_live=run_is_live,
        index_of=customer_index,
        refusals=(PermanentError, CustomerForgotten),
    )
    return PaymentOutcome(**effect.result, replayed=effect.replayed)


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
    """Refund `refund.amount` (or all that remains) unless this request was already refunded.
    Only a payment of `tenant_id`'s is refunded (PermanentError otherwise, before any call
    that moves money)."""
    key = effect_key("refund", tenant_id, idempotency_key)
    intent_id = refund.payment_intent_id

    def outcome_of(created: RefundSummary, remaining: int) -> dict:
        return _recordable(
            RefundOutcome(
                refund_id=created.id,
                status=created.status,
                amount=created.amount,
                currency=created.currency,
                payment_intent_id=created.payment_intent_id,
                remaining=remaining,
            )
        )

    def earlier_refund(_claim: Claim) -> dict | None:
        balance = stripe.refundable_balance(intent_id, tenant_id)  # includes an earlier refund
        earlier = stripe.find_refund(intent_id, idempotency_key)
        return None if earlier is None else outcome_of(earlier, balance.remaining)

    def issue_refund() -> dict:
        balance = stripe.refundable_balance(intent_id, tenant_id)
        amount = refund.amount if refund.amount is not None else balance.remaining
        check_refundable(amount, balance)
        created = stripe.create_refund(
            payment_intent_id=intent_id,
            amount=amount,
            reason=refund.reason,
            metadata=stripe_metadata(tenant_id, idempotency_key, refund.order_id, refund.metadata),
            idempotency_key=stripe_idempotency_key(key),
        )
        if created.status in {"failed", "canceled"}:
            raise PermanentError(
                f"refund {created.id} of {intent_id} ended {created.status!r}", code=created.status
            )
        return outcome_of(created, balance.remaining - created.amount)

    effect = act_once(
        ledger,
        key,
        "refund",
        run_id,
        issue_refund,
        in_doubt=earlier_refund,
        run_is_live=run_is_live,
    )
    return RefundOutcome(**effect.result, replayed=effect.replayed)
