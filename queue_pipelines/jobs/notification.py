"""notification_job: send a batch of free-standing templated e-mails (payment failed,
operator alerts, anything a producer asks for), each at most once. Here the message is the
request: one that fails for good is dead-lettered, like any request.

The notices that follow a charge, refund or mint are sent by those jobs themselves
(queue_pipelines/notifications/notifier.py).
"""

import dagster as dg

from queue_pipelines.intake.payloads import NotificationPayload
from queue_pipelines.jobs.batch import BatchConfig, Request, batch_job, run_batch
from queue_pipelines.notifications.events import Notice
from resources import EffectLedgerResource, NotifierResource, RedisResource


@dg.op(tags={"queue/effect": "smtp.email"})
def send_notifications(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    redis: RedisResource,
    effect_ledger: EffectLedgerResource,
    notifier: NotifierResource,
) -> dg.Output[dict[str, int]]:
    notices = notifier.for_run(context.run_id, effect_ledger.ledger(), resend=config.resend)

    def send(request: Request[NotificationPayload]) -> dict:
        message = request.payload
        context = dict(message.context)
        if message.template == "nft_delivered" and context.get("mint_address"):
            # The producer names the mint; the link is the operator's explorer, never text a
            # producer wrote (intake refuses links in context).
            context["explorer_url"] = notifier.explorer_link(context.pop("mint_address"))
        notice = Notice(
            tenant_id=request.tenant_id,
            idempotency_key=request.idempotency_key,
            template=message.template,
            recipient=str(message.recipient),
            recipient_name=None,
            context=context,
            webhook_kind="",
            event_type="",
            event_data={},
        )
        return {
            "template": message.template,
            "recipient": notice.recipient,
            **notices.email(notice),
        }

    return run_batch(context, config, intake=redis.intake(), handle=send)


notification_job = batch_job(
    "notification",
    send_notifications,
    description="Send a batch of one tenant's templated e-mails (payment confirmation, payment "
    "failed, refund issued, NFT delivered, operator alert), each at most once.",
)
