"""refund_job: refund a batch of PaymentIntents in full or in part, each at most once, then
tell each buyer (e-mail) and the platform (webhook)."""

import dagster as dg

from queue_pipelines.currencies import format_amount
from queue_pipelines.failures import ProviderError
from queue_pipelines.intake.payloads import RefundPayload
from queue_pipelines.jobs.batch import BatchConfig, Request, batch_job, run_batch
from queue_pipelines.jobs.common import run_is_live
from queue_pipelines.notifications.events import refund_notice
from queue_pipelines.payments import refund_once
from queue_pipelines.turns import Turns
from resources import EffectLedgerResource, NotifierResource, RedisResource, StripeResource


@dg.op(tags={"queue/effect": "stripe.refund"})
def refund_payments(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    redis: RedisResource,
    stripe: StripeResource,
    effect_ledger: EffectLedgerResource,
    notifier: NotifierResource,
) -> dg.Output[dict[str, int]]:
    api, ledger, intake = stripe.api(), effect_ledger.ledger(), redis.intake()
    notices = notifier.for_run(
        context.run_id, ledger, resend=config.resend, dead_letter=intake.dead_letter_notice
    )
    is_live = run_is_live(context.instance)
    # Refunds of one PaymentIntent take turns, across every run and worker: otherwise two
    # could both pass the refundable-balance check. A turn lasts a few Stripe calls.
    turns = Turns(redis.client(), redis.redis_keys().refund_lock, "refund of", "refund_in_progress")

    def refund_and_tell(request: Request[RefundPayload]) -> dict:
        payment_intent = request.payload.payment_intent_id
        with turns.holding(payment_intent):
            outcome = refund_once(
                api,
                ledger,
                tenant_id=request.tenant_id,
                idempotency_key=request.idempotency_key,
                refund=request.payload,
                run_id=context.run_id,
                run_is_live=is_live,
            )
        summary = {
            "order_id": request.payload.order_id,
            "payment_intent": outcome.payment_intent_id,
            "refund": outcome.refund_id,
            "refund_status": outcome.status,
            "amount": outcome.amount,
            "currency": outcome.currency,
            "amount_display": format_amount(outcome.amount, outcome.currency),
            "remaining_refundable": outcome.remaining,
            "refunded": "earlier" if outcome.replayed else "now",
        }
        effect = f"refund {outcome.refund_id} was issued"
        try:
            # The buyer's address lives with the Stripe customer, not in the refund request.
            email, name = api.customer_contact(payment_intent)
        except ProviderError as exc:
            reason = f"looking up the buyer of {payment_intent} failed: {exc.reason}"
            notices.alert_operators(
                summary=reason, details=f"{effect}, and stands", tenant_id=request.tenant_id
            )
            return {**summary, "notification_failed": reason}
        notice = refund_notice(
            request.tenant_id,
            request.idempotency_key,
            request.payload.order_id,
            outcome,
            email,
            name,
        )
        return {**summary, **notices.tell(notice, effect)}

    return run_batch(context, config, intake=intake, handle=refund_and_tell)


refund_job = batch_job(
    "refund",
    refund_payments,
    description="Refund a batch of one tenant's PaymentIntents, in full or in part; then each "
    "buyer is e-mailed and the platform told by webhook.",
)
