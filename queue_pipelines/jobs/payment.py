"""payment_job: charge a card through Stripe, at most once per request."""

import dagster as dg

from queue_pipelines import tags
from queue_pipelines.intake.schema import Envelope, PaymentPayload
from queue_pipelines.jobs.common import (
    TRANSIENT_RETRY_POLICY,
    IntakeRequestConfig,
    classified_failures,
    request_run_config,
    run_is_live,
)
from queue_pipelines.jobs.notification import (
    email_payment_confirmation,
    webhook_payment_succeeded,
)
from queue_pipelines.payments import PaymentOutcome, charge_once
from resources import EffectLedgerResource, StripeResource


@dg.op(retry_policy=TRANSIENT_RETRY_POLICY, tags={"queue/effect": "stripe.payment_intent"})
def charge_payment(
    context: dg.OpExecutionContext,
    config: IntakeRequestConfig,
    stripe: StripeResource,
    effect_ledger: EffectLedgerResource,
) -> dg.Output[PaymentOutcome]:
    payment = config.parsed(PaymentPayload)
    with classified_failures():
        outcome = charge_once(
            stripe.api(),
            effect_ledger.ledger(),
            tenant_id=config.tenant_id,
            idempotency_key=config.idempotency_key,
            payment=payment,
            run_id=context.run_id,
            run_is_live=run_is_live(context.instance),
        )
    if outcome.replayed:
        context.log.info(
            f"{outcome.payment_intent_id} was charged by an earlier attempt; not charging again"
        )
    return dg.Output(
        outcome,
        metadata={
            "payment_intent_id": outcome.payment_intent_id,
            "status": outcome.status,
            "amount": outcome.amount,
            "currency": outcome.currency,
            "amount_display": outcome.display_amount,
            "order_id": payment.order_id,
            "replayed": outcome.replayed,
            "sandbox": stripe.sandbox,
        },
    )


@dg.job(
    executor_def=dg.in_process_executor,
    description="Charge a card: customer found or created, PaymentIntent created and confirmed; "
    "then the buyer is e-mailed and the platform told by webhook.",
    tags={tags.JOB_TYPE: "payment"},
)
def payment_job():
    payment = charge_payment()
    email_payment_confirmation(payment)
    webhook_payment_succeeded(payment)


def payment_run_config(envelope: Envelope) -> dict:
    return request_run_config("charge_payment", envelope)
