"""Reconciling a charge.refunded event sums the ledger's refunds of that PaymentIntent and
that tenant exactly (issue #17, point 10): `_` in an id or a tenant id is a character, not
LIKE's "any character". On the real ledger database (PostgreSQL)."""

from __future__ import annotations

import uuid

from queue_pipelines.intake.payloads import StripeEventPayload
from queue_pipelines.ledger import effect_key
from queue_pipelines.reconciliation import judge


def record_refund(ledger, tenant: str, key: str, payment_intent_id: str, amount: int) -> None:
    ledger_key = effect_key("refund", tenant, key)
    ledger.claim(ledger_key, "refund", "run-1")
    ledger.record(
        ledger_key,
        {"refund_id": f"re_{key}", "payment_intent_id": payment_intent_id, "amount": amount},
    )


def refunded_event(tenant: str, payment_intent_id: str, amount_refunded: int):
    return StripeEventPayload(
        event_id=f"evt_{uuid.uuid4().hex}",
        event_type="charge.refunded",
        created=1,
        object_id="ch_1",
        payment_intent_id=payment_intent_id,
        amount_refunded=amount_refunded,
        currency="usd",
        metadata={"tenant_id": tenant, "idempotency_key": "paid-1"},
    )


def test_refund_sum_takes_underscores_literally(ledger):
    run = uuid.uuid4().hex[:10]
    ours, lookalike_tenant = f"a_{run}", f"aX{run}"  # 'refund:a_...' LIKE matches both
    intent, lookalike_intent = f"pi_{run}_1", f"pi_{run}X1"  # so does '... "pi_..._1"'
    record_refund(ledger, ours, "r1", intent, 100)
    record_refund(ledger, ours, "r2", lookalike_intent, 200)
    record_refund(ledger, lookalike_tenant, "r3", intent, 400)

    outcome, detail = judge(refunded_event(ours, intent, 100), ledger, ours)
    assert (outcome, detail) == ("matched", f"100 refunded on {intent}, as recorded")

    # Stripe has more than this tenant's ledger: the others' rows never fill the gap.
    outcome, detail = judge(refunded_event(ours, intent, 700), ledger, ours)
    assert outcome == "refunded_outside_pipeline"
    assert detail == f"Stripe has 700 refunded on {intent}, the ledger 100"
    assert judge(refunded_event(lookalike_tenant, intent, 400), ledger, lookalike_tenant)[0] == (
        "matched"
    )
