"""payment_job: charge the cards of a batch of payment requests, each at most once, then tell
each buyer (e-mail) and the platform (webhook). A declined card is dead-lettered with Stripe's
reason, and the buyer gets a payment_failed e-mail through notification_job."""

import dagster as dg

from queue_pipelines.intake.payloads import PaymentPayload
from queue_pipelines.jobs.batch import BatchConfig, Request, batch_job, run_batch
from queue_pipelines.jobs.common import run_is_live
from queue_pipelines.notifications.events import payment_failed_request, payment_notice
from queue_pipelines.payments import charge_once
from queue_pipelines.providers.stripe import CardDeclined
from queue_pipelines.request_runner import ItemResult
from resources import EffectLedgerResource, NotifierResource, RedisResource, StripeResource


@dg.op(tags={"queue/effect": "stripe.payment_intent"})
def charge_payments(
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

    def charge_and_tell(request: Request[PaymentPayload]) -> dict:
        outcome = charge_once(
            api,
            ledger,
            tenant_id=request.tenant_id,
            idempotency_key=request.idempotency_key,
            payment=request.payload,
            run_id=context.run_id,
            run_is_live=is_live,
        )
        summary = {
            "order_id": request.payload.order_id,
            "payment_intent": outcome.payment_intent_id,
            "payment_status": outcome.status,
            "amount": outcome.amount,
            "currency": outcome.currency,
            "amount_display": outcome.display_amount,
            "charged": "earlier" if outcome.replayed else "now",
        }
        notice = payment_notice(
            request.tenant_id, request.idempotency_key, request.payload, outcome
        )
        return {
            **summary,
            **notices.tell(notice, f"payment {outcome.payment_intent_id} succeeded"),
        }

    def tell_the_buyer(request: Request[PaymentPayload], result: ItemResult) -> None:
        # Only a decline is the buyer's to know and act on; other permanent failures (a key,
        # a reconciliation) are the operators', and they see them in the dead letter.
        if isinstance(result.error, CardDeclined):
            envelope = payment_failed_request(
                request.tenant_id, request.idempotency_key, request.payload, result.reason
            )
            intake.enqueue(envelope)

    return run_batch(
        context, config, intake=intake, handle=charge_and_tell, after_failure=tell_the_buyer
    )


payment_job = batch_job(
    "payment",
    charge_payments,
    description="Charge the cards of a batch of one tenant's payment requests (customer found "
    "or created, PaymentIntent created and confirmed); then each buyer is e-mailed and the "
    "platform told by webhook.",
)
