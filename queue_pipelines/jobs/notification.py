"""Notification steps: e-mail to the buyer, webhook to the platform, alert to the operators.

Two kinds of use:
- at the end of payment_job, refund_job (and mint_job): each outcome told once; a step
  that fails for good leaves the charge, refund or mint before it standing, alerts the
  operators, and tags the run so that the intake settles its entries instead of
  dead-lettering them as if the charge had failed;
- notification_job: one free-standing templated message from the notification intake.
"""

from collections.abc import Callable
from typing import Any

import dagster as dg
from pydantic import Field

from queue_pipelines import tags
from queue_pipelines.intake.schema import Envelope, NotificationPayload, PaymentPayload
from queue_pipelines.jobs.common import (
    IntakeRequestConfig,
    classified_failures,
    request_run_config,
)
from queue_pipelines.notifications.delivery import (
    Delivery,
    build_email,
    email_key,
    send_email_once,
    send_webhook_once,
    webhook_key,
)
from queue_pipelines.notifications.events import (
    NftDelivery,
    Notice,
    nft_notice,
    payment_notice,
    refund_notice,
)
from queue_pipelines.notifications.templates import render
from queue_pipelines.notifications.tenants import DEFAULT_PROFILE
from queue_pipelines.payments import PaymentOutcome, RefundOutcome
from resources import (
    EffectLedgerResource,
    NotificationSettingsResource,
    SmtpResource,
    StripeResource,
    WebhookResource,
)

# Notifications have their own schedule: the resources already retry a few times within a
# step (seconds apart); these step retries then wait 10 s, 20 s, 40 s, 80 s (± jitter).
NOTIFICATION_RETRY_POLICY = dg.RetryPolicy(
    max_retries=4, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


class NotifyConfig(dg.Config):
    resend: bool = Field(
        default=False,
        description="Send again even though the ledger says it was sent (an operator's choice).",
    )


class NotificationRequestConfig(IntakeRequestConfig):
    resend: bool = Field(
        default=False,
        description="Send again even though the ledger says it was sent (an operator's choice).",
    )


def request_of(context: dg.OpExecutionContext, op_name: str) -> IntakeRequestConfig:
    """The request the run serves, from the effect step's config: one place, whether the
    sensor or an operator wrote it."""
    return IntakeRequestConfig(**context.run_config["ops"][op_name]["config"])


def _retries_left(context: dg.OpExecutionContext) -> bool:
    return context.retry_number < NOTIFICATION_RETRY_POLICY.max_retries


def alert_operators(
    context: dg.OpExecutionContext,
    smtp: SmtpResource,
    settings: NotificationSettingsResource,
    *,
    summary: str,
    details: str,
    tenant_id: str,
) -> None:
    """Best effort: the run's own failure is the record; the alert points an operator at it."""
    context.log.error(f"operator alert: {summary}: {details}")
    try:
        rendered = render(
            "operator_alert",
            {
                "summary": summary,
                "details": details,
                "run_id": context.run_id,
                "tenant_id": tenant_id,
            },
            DEFAULT_PROFILE,
        )
        smtp.sender().send(
            build_email(rendered, recipient=settings.operator_email, sender=smtp.from_address)
        )
    except Exception as exc:
        context.log.error(
            f"the operator alert could not be e-mailed to {settings.operator_email}: {exc}"
        )


def mark_notification_failed(context: dg.OpExecutionContext) -> None:
    """Tag the run so that the intake settles its entries rather than dead-letter them."""
    try:
        run = context.instance.get_run_by_id(context.run_id)
        earlier = run.tags.get(tags.NOTIFICATION_FAILED) if run else None
        failed = ",".join(filter(None, [earlier, context.op.name]))
        context.instance.add_run_tags(context.run_id, {tags.NOTIFICATION_FAILED: failed})
    except Exception as exc:
        # Without the tag the entry is dead-lettered; its reason still names this step.
        context.log.error(f"could not tag run {context.run_id} as notification-failed: {exc}")


def notify(
    context: dg.OpExecutionContext,
    *,
    what: str,
    send: Callable[[], Any],
    smtp: SmtpResource,
    settings: NotificationSettingsResource,
    tenant_id: str,
    effect_stands: str | None,
) -> Any:
    """Run `send` under the notification retry policy. When it fails for good: alert the
    operators, tag the run (when an effect before it stands), and fail the step saying so."""
    try:
        with classified_failures():
            return send()
    except dg.Failure as exc:
        reason = exc.description or "failed"
    except Exception as exc:
        if _retries_left(context):
            raise
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
    attempts = context.retry_number + 1
    description = f"{what} failed for good after {attempts} step attempt(s): {reason}"
    if effect_stands:
        description += (
            f". {effect_stands}, and stands: it is not undone or repeated. Fix the cause, then "
            "re-execute this run from failure."
        )
        mark_notification_failed(context)
    alert_operators(
        context, smtp, settings, summary=f"{what} failed for good", details=description,
        tenant_id=tenant_id,
    )  # fmt: skip
    raise dg.Failure(
        description=description,
        metadata={"failure_class": "notification", "effect_stands": bool(effect_stands)},
        allow_retries=False,
    )


def _output(delivery: Delivery | None, skipped: str | None, **metadata: Any) -> dg.Output:
    if delivery is None:
        return dg.Output({"skipped": skipped}, metadata={**metadata, "skipped": skipped or ""})
    if delivery.replayed:
        metadata["note"] = "sent by an earlier attempt; not sent again"
    return dg.Output(
        delivery.result,
        metadata={
            **metadata,
            **{k: v for k, v in delivery.result.items() if v is not None},
            "effect_key": delivery.effect_key,
            "replayed": delivery.replayed,
        },
    )


def email_notice(
    context: dg.OpExecutionContext,
    notice: Notice,
    *,
    resend: bool,
    smtp: SmtpResource,
    settings: NotificationSettingsResource,
    ledger: EffectLedgerResource,
    effect_stands: str | None,
) -> dg.Output:
    if not notice.recipient:
        reason = f"no e-mail address is known for {notice.template}"
        context.log.warning(reason)
        return _output(None, reason, template=notice.template)
    profile = settings.profile(notice.tenant_id)

    def send() -> Delivery:
        rendered = render(notice.template, notice.context, profile)
        message = build_email(
            rendered,
            recipient=notice.recipient,
            recipient_name=notice.recipient_name,
            sender=smtp.from_address,
            reply_to=str(profile.support_email),
        )
        return send_email_once(
            smtp.sender(),
            ledger.ledger(),
            message,
            key=email_key(notice.tenant_id, notice.idempotency_key, notice.template),
            run_id=context.run_id,
            resend=resend,
        )

    delivery = notify(
        context,
        what=f"e-mail {notice.template!r} to {notice.recipient}",
        send=send,
        smtp=smtp,
        settings=settings,
        tenant_id=notice.tenant_id,
        effect_stands=effect_stands,
    )
    return _output(delivery, None, template=notice.template, sandbox=smtp.sandbox)


def webhook_notice(
    context: dg.OpExecutionContext,
    notice: Notice,
    *,
    resend: bool,
    webhooks: WebhookResource,
    smtp: SmtpResource,
    settings: NotificationSettingsResource,
    ledger: EffectLedgerResource,
    effect_stands: str | None,
) -> dg.Output:
    url = webhooks.url_for(notice.webhook_kind, settings.profile(notice.tenant_id))
    if not url:
        reason = f"no {notice.webhook_kind} webhook endpoint is configured"
        context.log.info(reason)
        return _output(None, reason, event_type=notice.event_type)

    def send() -> Delivery:
        return send_webhook_once(
            webhooks.sender(),
            ledger.ledger(),
            url=url,
            event_type=notice.event_type,
            data=notice.event_data,
            key=webhook_key(notice.tenant_id, notice.idempotency_key, notice.event_type),
            run_id=context.run_id,
            resend=resend,
        )

    delivery = notify(
        context,
        what=f"webhook {notice.event_type}",
        send=send,
        smtp=smtp,
        settings=settings,
        tenant_id=notice.tenant_id,
        effect_stands=effect_stands,
    )
    return _output(delivery, None, event_type=notice.event_type)


# payment_job


def _payment_notice(context: dg.OpExecutionContext, payment: PaymentOutcome) -> Notice:
    request = request_of(context, "charge_payment")
    return payment_notice(
        request.tenant_id, request.idempotency_key, request.parsed(PaymentPayload), payment
    )


@dg.op(retry_policy=NOTIFICATION_RETRY_POLICY, tags={"queue/effect": "smtp.email"})
def email_payment_confirmation(
    context: dg.OpExecutionContext,
    config: NotifyConfig,
    payment: PaymentOutcome,
    smtp: SmtpResource,
    notification_settings: NotificationSettingsResource,
    effect_ledger: EffectLedgerResource,
):
    return email_notice(
        context,
        _payment_notice(context, payment),
        resend=config.resend,
        smtp=smtp,
        settings=notification_settings,
        ledger=effect_ledger,
        effect_stands=f"Payment {payment.payment_intent_id} succeeded",
    )


@dg.op(retry_policy=NOTIFICATION_RETRY_POLICY, tags={"queue/effect": "webhook"})
def webhook_payment_succeeded(
    context: dg.OpExecutionContext,
    config: NotifyConfig,
    payment: PaymentOutcome,
    webhooks: WebhookResource,
    smtp: SmtpResource,
    notification_settings: NotificationSettingsResource,
    effect_ledger: EffectLedgerResource,
):
    return webhook_notice(
        context,
        _payment_notice(context, payment),
        resend=config.resend,
        webhooks=webhooks,
        smtp=smtp,
        settings=notification_settings,
        ledger=effect_ledger,
        effect_stands=f"Payment {payment.payment_intent_id} succeeded",
    )


# refund_job


def _refund_notice(
    context: dg.OpExecutionContext, refund: RefundOutcome, stripe: StripeResource | None
) -> Notice:
    request = request_of(context, "refund_payment")
    email, name = (None, None)
    if stripe is not None:
        with classified_failures():
            email, name = stripe.api().customer_contact(refund.payment_intent_id)
    return refund_notice(
        request.tenant_id,
        request.idempotency_key,
        request.payload.get("order_id"),
        refund,
        email,
        name,
    )


@dg.op(retry_policy=NOTIFICATION_RETRY_POLICY, tags={"queue/effect": "smtp.email"})
def email_refund_issued(
    context: dg.OpExecutionContext,
    config: NotifyConfig,
    refund: RefundOutcome,
    stripe: StripeResource,
    smtp: SmtpResource,
    notification_settings: NotificationSettingsResource,
    effect_ledger: EffectLedgerResource,
):
    # The buyer's address lives with the Stripe customer, not in the refund request.
    notice = notify(
        context,
        what=f"looking up the buyer of {refund.payment_intent_id}",
        send=lambda: _refund_notice(context, refund, stripe),
        smtp=smtp,
        settings=notification_settings,
        tenant_id=request_of(context, "refund_payment").tenant_id,
        effect_stands=f"Refund {refund.refund_id} was issued",
    )
    return email_notice(
        context,
        notice,
        resend=config.resend,
        smtp=smtp,
        settings=notification_settings,
        ledger=effect_ledger,
        effect_stands=f"Refund {refund.refund_id} was issued",
    )


@dg.op(retry_policy=NOTIFICATION_RETRY_POLICY, tags={"queue/effect": "webhook"})
def webhook_refund_issued(
    context: dg.OpExecutionContext,
    config: NotifyConfig,
    refund: RefundOutcome,
    webhooks: WebhookResource,
    smtp: SmtpResource,
    notification_settings: NotificationSettingsResource,
    effect_ledger: EffectLedgerResource,
):
    return webhook_notice(
        context,
        _refund_notice(context, refund, None),
        resend=config.resend,
        webhooks=webhooks,
        smtp=smtp,
        settings=notification_settings,
        ledger=effect_ledger,
        effect_stands=f"Refund {refund.refund_id} was issued",
    )


# mint_job: wire these after the step that delivers the NFT (docs/notifications.md)


@dg.op(retry_policy=NOTIFICATION_RETRY_POLICY, tags={"queue/effect": "smtp.email"})
def email_nft_delivered(
    context: dg.OpExecutionContext,
    config: NotifyConfig,
    delivery: NftDelivery,
    smtp: SmtpResource,
    notification_settings: NotificationSettingsResource,
    effect_ledger: EffectLedgerResource,
):
    return email_notice(
        context,
        nft_notice(delivery, notification_settings.explorer_url_template),
        resend=config.resend,
        smtp=smtp,
        settings=notification_settings,
        ledger=effect_ledger,
        effect_stands=f"NFT {delivery.mint_address} was delivered to {delivery.wallet}",
    )


@dg.op(retry_policy=NOTIFICATION_RETRY_POLICY, tags={"queue/effect": "webhook"})
def webhook_nft_delivered(
    context: dg.OpExecutionContext,
    config: NotifyConfig,
    delivery: NftDelivery,
    webhooks: WebhookResource,
    smtp: SmtpResource,
    notification_settings: NotificationSettingsResource,
    effect_ledger: EffectLedgerResource,
):
    return webhook_notice(
        context,
        nft_notice(delivery, notification_settings.explorer_url_template),
        resend=config.resend,
        webhooks=webhooks,
        smtp=smtp,
        settings=notification_settings,
        ledger=effect_ledger,
        effect_stands=f"NFT {delivery.mint_address} was delivered to {delivery.wallet}",
    )


# notification_job


@dg.op(retry_policy=NOTIFICATION_RETRY_POLICY, tags={"queue/effect": "smtp.email"})
def email_notification(
    context: dg.OpExecutionContext,
    config: NotificationRequestConfig,
    smtp: SmtpResource,
    notification_settings: NotificationSettingsResource,
    effect_ledger: EffectLedgerResource,
):
    request = config.parsed(NotificationPayload)
    notice = Notice(
        tenant_id=config.tenant_id,
        idempotency_key=config.idempotency_key,
        template=request.template,
        recipient=str(request.recipient),
        recipient_name=None,
        context=dict(request.context),
        webhook_kind="",
        event_type="",
        event_data={},
    )
    # The message is the request here: failing for good dead-letters it, as any request.
    return email_notice(
        context,
        notice,
        resend=config.resend,
        smtp=smtp,
        settings=notification_settings,
        ledger=effect_ledger,
        effect_stands=None,
    )


@dg.job(
    executor_def=dg.in_process_executor,
    description="Send one templated e-mail (payment confirmation, payment failed, refund "
    "issued, NFT delivered, operator alert) at most once per request.",
    tags={tags.JOB_TYPE: "notification"},
)
def notification_job():
    email_notification()


def notification_run_config(envelope: Envelope) -> dict:
    return request_run_config("email_notification", envelope)
