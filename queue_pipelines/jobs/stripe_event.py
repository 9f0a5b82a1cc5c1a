"""stripe_event_job: reconcile one verified Stripe webhook event with the effect ledger."""

import dagster as dg

from queue_pipelines import tags
from queue_pipelines.intake.schema import Envelope, StripeEventPayload
from queue_pipelines.jobs.common import (
    TRANSIENT_RETRY_POLICY,
    IntakeRequestConfig,
    classified_failures,
    request_run_config,
)
from queue_pipelines.reconciliation import Reconciliation, StripeReconciliations
from resources import EffectLedgerResource


@dg.op(retry_policy=TRANSIENT_RETRY_POLICY)
def reconcile_stripe_event(
    context: dg.OpExecutionContext,
    config: IntakeRequestConfig,
    effect_ledger: EffectLedgerResource,
) -> dg.Output[Reconciliation]:
    event = config.parsed(StripeEventPayload)
    with classified_failures():
        result = StripeReconciliations(effect_ledger.ledger()).reconcile(
            config.tenant_id, event, context.run_id
        )
    if result.needs_attention:
        context.log.warning(f"{event.event_type} {event.event_id}: {result.detail}")
    return dg.Output(
        result,
        metadata={
            "event_id": event.event_id,
            "event_type": event.event_type,
            "outcome": result.outcome,
            "needs_attention": result.needs_attention,
            "detail": result.detail,
            "payment_intent_id": event.payment_intent_id or "",
            "replayed": result.replayed,
        },
    )


@dg.job(
    executor_def=dg.in_process_executor,
    description="Reconcile a Stripe webhook event (payment succeeded or failed, refund, "
    "dispute) with the effect ledger.",
    tags={tags.JOB_TYPE: "stripe_event"},
)
def stripe_event_job():
    reconcile_stripe_event()


def stripe_event_run_config(envelope: Envelope) -> dict:
    return request_run_config("reconcile_stripe_event", envelope)
