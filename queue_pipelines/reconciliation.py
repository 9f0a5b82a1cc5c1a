"""Reconciling Stripe's events with what the pipeline recorded: the rules, free of Dagster.

Stripe's word (a verified webhook event) is compared with the effect ledger, and the result
is kept in its own table, one row per event id, next to the ledger:

    payment_intent.succeeded       matched | amount_mismatch | outcome_not_recorded | unknown
    payment_intent.payment_failed  failure_confirmed | conflict (the ledger says charged)
    charge.refunded                matched | refunded_outside_pipeline | amount_mismatch
    charge.dispute.created         dispute_opened (an operator must answer it in Stripe)
    any, naming another tenant     tenant_mismatch (not judged: see below)

The tenant is the envelope's, which only the verified webhook route sets from Stripe's own
object (tenants cannot submit stripe_event entries). An event whose metadata names a tenant
other than the envelope's did not come that way: it is recorded as `tenant_mismatch` and the
ledger of the tenant it names is never read or judged.

Nothing here changes the ledger: a `pending` claim that Stripe reports as charged is resumed
by its own run with Stripe's idempotency key; the row here tells the operator why.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from queue_pipelines.intake.payloads import StripeEventPayload
from queue_pipelines.ledger import DONE, EffectLedger, effect_key

_metadata = sa.MetaData()
stripe_events = sa.Table(
    "qp_stripe_reconciliation",
    _metadata,
    sa.Column("event_id", sa.String(255), primary_key=True),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("object_id", sa.String(255), nullable=False),
    sa.Column("payment_intent_id", sa.String(255), nullable=True),
    sa.Column("amount", sa.BigInteger, nullable=True),
    sa.Column("currency", sa.String(3), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("needs_attention", sa.Boolean, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

ATTENTION = {
    "amount_mismatch",
    "conflict",
    "refunded_outside_pipeline",
    "dispute_opened",
    "tenant_mismatch",
}


@dataclass(frozen=True)
class Reconciliation:
    event_id: str
    event_type: str
    outcome: str
    detail: str
    payment_intent_id: str | None
    amount: int | None
    currency: str | None
    replayed: bool = False  # an earlier run already reconciled this event

    @property
    def needs_attention(self) -> bool:
        return self.outcome in ATTENTION


def _ledger_result(ledger: EffectLedger, key: str) -> tuple[str | None, dict]:
    row = ledger.get(key)
    if row is None:
        return None, {}
    return row["status"], json.loads(row["result"]) if row["result"] else {}


def _refunded_in_ledger(ledger: EffectLedger, payment_intent_id: str, tenant: str | None) -> int:
    """What the ledger records as refunded on the PaymentIntent: its done refunds, `tenant`'s
    when the event names one. `find_done` matches the id exactly and escapes LIKE's
    wildcards: ids and tenant ids hold `_`, which a bare LIKE takes for any character, so
    pi_a_1 would also have counted the refunds of piXaX1, and tenant a_b those of aXb."""
    prefix = effect_key("refund", tenant, "") if tenant else "refund:"
    found = ledger.find_done("refund", prefix, "payment_intent_id", payment_intent_id)
    return sum(json.loads(row["result"])["amount"] for row in found)


def judge(
    event: StripeEventPayload, ledger: EffectLedger, tenant_id: str | None = None
) -> tuple[str, str]:
    """(outcome, detail) for one event that arrived as `tenant_id`'s (None: trust the
    metadata, for callers holding an event verified some other way)."""
    tenant = event.metadata.get("tenant_id")
    if tenant_id is not None and tenant and tenant != tenant_id:
        return (
            "tenant_mismatch",
            f"the event names tenant {tenant!r} but arrived as {tenant_id!r}: not judged "
            "(only the verified webhook route enqueues Stripe events)",
        )
    key = event.metadata.get("idempotency_key")
    ledger_key = effect_key("payment", tenant, key) if tenant and key else None
    status, result = _ledger_result(ledger, ledger_key) if ledger_key else (None, {})
    intent = event.payment_intent_id

    if event.event_type == "payment_intent.succeeded":
        if ledger_key is None:
            return "unknown", f"{intent} carries no tenant_id/idempotency_key: not ours"
        if status is None:
            return "unknown", f"no ledger entry for {ledger_key}"
        if status != DONE:
            return (
                "outcome_not_recorded",
                f"Stripe charged {intent}; the attempt for {ledger_key} never recorded it "
                "(its run resumes with Stripe's idempotency key)",
            )
        if result.get("payment_intent_id") != intent or result.get("amount") != event.amount:
            return (
                "amount_mismatch",
                f"ledger has {result.get('payment_intent_id')} for {result.get('amount')}, "
                f"Stripe {intent} for {event.amount}",
            )
        return "matched", f"{intent} for {event.amount} {event.currency} as recorded"

    if event.event_type == "payment_intent.payment_failed":
        if status == DONE and result.get("payment_intent_id") == intent:
            return "conflict", f"the ledger records {intent} as charged; Stripe says it failed"
        return "failure_confirmed", f"{intent} failed: {event.reason or 'no reason given'}"

    if event.event_type == "charge.refunded":
        recorded = _refunded_in_ledger(ledger, intent, tenant) if intent else 0
        refunded = event.amount_refunded or 0
        if refunded == recorded:
            return "matched", f"{refunded} refunded on {intent}, as recorded"
        if refunded > recorded:
            return (
                "refunded_outside_pipeline",
                f"Stripe has {refunded} refunded on {intent}, the ledger {recorded}",
            )
        return "amount_mismatch", f"Stripe has {refunded} refunded on {intent}, ledger {recorded}"

    return (
        "dispute_opened",
        f"dispute {event.object_id} on {intent or 'a charge'} for {event.amount} "
        f"{event.currency}: {event.reason or 'no reason given'}; answer it in the Stripe dashboard",
    )


class StripeReconciliations:
    """The reconciliation table, in the effect ledger's database."""

    def __init__(self, ledger: EffectLedger):
        self.ledger = ledger
        ledger.write(lambda conn: _metadata.create_all(conn, checkfirst=True))

    def reconcile(self, tenant_id: str, event: StripeEventPayload, run_id: str) -> Reconciliation:
        """Judge and record the event once; a repeat returns the first judgement."""
        outcome, detail = judge(event, self.ledger, tenant_id)
        found = Reconciliation(
            event_id=event.event_id,
            event_type=event.event_type,
            outcome=outcome,
            detail=detail,
            payment_intent_id=event.payment_intent_id,
            amount=event.amount_refunded if event.event_type == "charge.refunded" else event.amount,
            currency=event.currency,
        )
        row = {k: v for k, v in asdict(found).items() if k != "replayed"}
        try:
            self.ledger.write(
                lambda conn: conn.execute(
                    stripe_events.insert().values(
                        **row,
                        tenant_id=tenant_id,
                        object_id=event.object_id,
                        needs_attention=found.needs_attention,
                        run_id=run_id,
                        recorded_at=datetime.now(UTC),
                    )
                )
            )
        except IntegrityError:
            earlier = self.get(event.event_id)
            return Reconciliation(
                **{k: earlier[k] for k in row},
                replayed=True,
            )
        return found

    def get(self, event_id: str) -> dict | None:
        with self.ledger.reading() as conn:
            row = conn.execute(
                sa.select(stripe_events).where(stripe_events.c.event_id == event_id)
            ).one_or_none()
        return dict(row._mapping) if row else None
