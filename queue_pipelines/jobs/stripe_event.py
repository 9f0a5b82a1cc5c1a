"""stripe_event_job: reconcile a batch of verified Stripe webhook events with the effect
ledger, each at most once."""

import dagster as dg

from queue_pipelines.intake.payloads import StripeEventPayload
from queue_pipelines.jobs.batch import BatchConfig, Request, batch_job, run_batch
from queue_pipelines.reconciliation import StripeReconciliations
from resources import EffectLedgerResource, RedisResource


@dg.op
def reconcile_stripe_events(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    redis: RedisResource,
    effect_ledger: EffectLedgerResource,
) -> dg.Output[dict[str, int]]:
    reconciliations = StripeReconciliations(effect_ledger.ledger())

    def reconcile(request: Request[StripeEventPayload]) -> dict:
        event = request.payload
        result = reconciliations.reconcile(request.tenant_id, event, context.run_id)
        if result.needs_attention:
            context.log.warning(f"{event.event_type} {event.event_id}: {result.detail}")
        return {
            "event_id": event.event_id,
            "event_type": event.event_type,
            "outcome": result.outcome,
            "needs_attention": result.needs_attention,
            "detail": result.detail,
            "payment_intent": event.payment_intent_id or "",
            "reconciled": "earlier" if result.replayed else "now",
        }

    return run_batch(context, config, intake=redis.intake(), handle=reconcile)


stripe_event_job = batch_job(
    "stripe_event",
    reconcile_stripe_events,
    description="Reconcile a batch of Stripe webhook events (payment succeeded or failed, "
    "refund, dispute) with the effect ledger.",
)
