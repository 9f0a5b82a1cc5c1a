"""Telling the buyer when a payment failed: a declined card becomes a `payment_failed` request
on the notification intake, sent by notification_job at most once per payment request."""

import hashlib

import dagster as dg

from queue_pipelines.currencies import format_amount
from queue_pipelines.intake.schema import Envelope, NotificationPayload, PaymentPayload
from queue_pipelines.notifications.events import buyer_greeting_name
from resources import RedisResource

# Only a decline is the buyer's to know and act on; other permanent failures (a key, a
# reconciliation) are the operators', and they see them in the dead letter.
BUYER_FACING_PREFIX = "card declined"


def declined_charge_reason(instance: dg.DagsterInstance, run_id: str) -> str | None:
    records = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.STEP_FAILURE}
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        failure = event.step_failure_data.user_failure_data
        if event.step_key != "charge_payment" or failure is None:
            continue
        if (failure.description or "").startswith(BUYER_FACING_PREFIX):
            return failure.description
    return None


def payment_failed_request(run_config: dict, reason: str) -> Envelope:
    config = run_config["ops"]["charge_payment"]["config"]
    payment = PaymentPayload.model_validate(config["payload"])
    key = f"payment-failed:{config['idempotency_key']}"
    if len(key) > 255:  # the envelope's limit; a digest keeps it unique
        key = "payment-failed:" + hashlib.sha256(key.encode()).hexdigest()
    email = str(payment.customer_email)
    return Envelope(
        type="notification",
        tenant_id=config["tenant_id"],
        idempotency_key=key,
        payload=NotificationPayload(
            template="payment_failed",
            recipient=email,
            context={
                "buyer_name": buyer_greeting_name(payment.customer_name, email),
                "order_id": payment.order_id,
                "amount": format_amount(payment.amount, payment.currency),
                "reason": reason,
            },
        ),
    )


def build_payment_failed_notice_sensor(
    payment_job: dg.JobDefinition, minimum_interval_seconds: int = 5
) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="payment_failed_notice_sensor",
        monitored_jobs=[payment_job],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="When a payment run failed on a declined card, asks notification_job to "
        "e-mail the buyer (payment_failed), once per payment request.",
    )
    def payment_failed_notice_sensor(context: dg.RunFailureSensorContext, redis: RedisResource):
        run = context.dagster_run
        reason = declined_charge_reason(context.instance, run.run_id)
        if reason is None:
            return dg.SkipReason(f"run {run.run_id} did not fail on a declined card")
        envelope = payment_failed_request(run.run_config, reason)
        entry_id = redis.intake().enqueue(envelope)
        context.log.info(f"run {run.run_id}: payment_failed e-mail requested as {entry_id}")

    return payment_failed_notice_sensor
