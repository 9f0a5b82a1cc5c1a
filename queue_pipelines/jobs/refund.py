"""refund_job: refund a PaymentIntent in full or in part, at most once per request."""

import dagster as dg

from queue_pipelines import tags
from queue_pipelines.currencies import format_amount
from queue_pipelines.intake.schema import Envelope, RefundPayload
from queue_pipelines.jobs.common import (
    TRANSIENT_RETRY_POLICY,
    IntakeRequestConfig,
    classified_failures,
    request_run_config,
    run_is_live,
)
from queue_pipelines.jobs.notification import email_refund_issued, webhook_refund_issued
from queue_pipelines.payments import RefundOutcome, refund_once
from resources import EffectLedgerResource, StripeResource


@dg.op(retry_policy=TRANSIENT_RETRY_POLICY, tags={"queue/effect": "stripe.refund"})
def refund_payment(
    context: dg.OpExecutionContext,
    config: IntakeRequestConfig,
    stripe: StripeResource,
    effect_ledger: EffectLedgerResource,
) -> dg.Output[RefundOutcome]:
    refund = config.parsed(RefundPayload)
    with classified_failures():
        outcome = refund_once(
            stripe.api(),
            effect_ledger.ledger(),
            tenant_id=config.tenant_id,
            idempotency_key=config.idempotency_key,
            refund=refund,
            run_id=context.run_id,
            run_is_live=run_is_live(context.instance),
        )
    if outcome.replayed:
        context.log.info(f"{outcome.refund_id} was made by an earlier attempt; not refunding again")
    return dg.Output(
        outcome,
        metadata={
            "refund_id": outcome.refund_id,
            "payment_intent_id": outcome.payment_intent_id,
            "status": outcome.status,
            "amount": outcome.amount,
            "currency": outcome.currency,
            "amount_display": format_amount(outcome.amount, outcome.currency),
            "remaining_refundable": outcome.remaining,
            "replayed": outcome.replayed,
            "sandbox": stripe.sandbox,
        },
    )


@dg.job(
    executor_def=dg.in_process_executor,
    description="Refund a PaymentIntent, in full or in part; then the buyer is e-mailed and the "
    "platform told by webhook.",
    tags={tags.JOB_TYPE: "refund"},
)
def refund_job():
    refund = refund_payment()
    email_refund_issued(refund)
    webhook_refund_issued(refund)


def refund_run_config(envelope: Envelope) -> dict:
    return request_run_config("refund_payment", envelope)
