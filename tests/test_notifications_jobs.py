"""Notification steps in real runs: intake → sensor → payment/refund/notification runs →
e-mail through a real SMTP server and webhooks to a real receiver, each at most once."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from queue_pipelines import tags
from queue_pipelines.definitions import defs
from queue_pipelines.intake.payloads import NotificationPayload, RefundPayload
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.jobs.payment import payment_job
from queue_pipelines.notifications.events import NftDelivery
from queue_pipelines.providers.webhook_signing import new_secret
from resources import SmtpResource, WebhookResource
from tests.harness import IntakeHarness
from tests.mail_sink import MailSink
from tests.stripe_sandbox import payment_intents_of
from tests.test_payment_flow import payment
from tests.webhook_receiver import WebhookReceiver

SCRIPT_NAME = "<script>alert('x')</script> Ada"


@pytest.fixture
def receiver():
    with WebhookReceiver(new_secret()) as server:
        yield server


@pytest.fixture
def notifying(resources, receiver) -> dict:
    """The test resources, with webhooks going to the receiver."""
    webhooks = WebhookResource(
        secret=receiver.secret,
        payment_url=receiver.url,
        refund_url=receiver.url,
        nft_url=receiver.url,
        backoff_seconds=0.01,
    )
    return {**resources, "webhooks": webhooks}


def buyer(tenant: str) -> str:
    return f"{tenant}@example.com"


def test_a_payment_run_sends_one_email_and_one_signed_webhook(
    instance, notifying, intake, tenant, mail_sink, receiver, stripe_resource
):
    intake.enqueue(
        payment(
            tenant, "pay-1", amount=2500, customer_email=buyer(tenant), customer_name=SCRIPT_NAME
        )
    )
    harness = IntakeHarness(instance, notifying, "payment")

    assert harness.drain() == 1

    [result] = harness.results
    assert result.success
    [intent] = payment_intents_of(stripe_resource, tenant)
    [mail] = mail_sink.to(buyer(tenant))
    assert mail["Subject"] == "Tickets: payment of 25.00 USD received for order order-pay-1"
    assert mail["To"].addresses[0].addr_spec == buyer(tenant)
    assert mail["From"] == "Tickets <tickets@example.com>"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert f"Hello {SCRIPT_NAME}," in text
    assert f"Payment reference: {intent.id}" in text
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Ada" in html
    assert f"<code>{intent.id}</code>" in html

    [delivery] = receiver.received
    assert delivery.signature_valid
    event = delivery.event
    assert event["type"] == "payment.succeeded"
    assert event["data"]["payment_intent_id"] == intent.id
    assert (event["data"]["amount"], event["data"]["currency"]) == (2500, "usd")
    assert intake.client.xlen(intake.stream_key("payment")) == 0


def test_reexecuting_a_succeeded_payment_run_sends_nothing_twice(
    instance, notifying, intake, tenant, mail_sink, receiver, stripe_resource, monkeypatch
):
    monkeypatch.setenv("QP_TEST_STRIPE_URL", stripe_resource.api_base)
    monkeypatch.setenv("QP_TEST_LEDGER_URL", notifying["effect_ledger"].database_url)
    monkeypatch.setenv("QP_TEST_REDIS_URL", notifying["redis"].url)
    monkeypatch.setenv("QP_TEST_SMTP_PORT", str(notifying["smtp"].port))
    monkeypatch.setenv("QP_TEST_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("QP_TEST_WEBHOOK_SECRET", receiver.secret)
    intake.enqueue(payment(tenant, "pay-2", customer_email=buyer(tenant)))
    harness = IntakeHarness(instance, notifying, "payment")
    harness.drain()
    [original] = harness.results
    assert original.success and len(mail_sink.to(buyer(tenant))) == 1

    with dg.execute_job(
        dg.reconstructable(payment_job_with_notification_resources),
        instance=instance,
        reexecution_options=dg.ReexecutionOptions(parent_run_id=original.run_id),
    ) as reexecution:
        assert reexecution.success
        email = reexecution.output_for_node("email_payment_confirmation")
        webhook = reexecution.output_for_node("webhook_payment_succeeded")

    assert len(mail_sink.to(buyer(tenant))) == 1
    assert len(receiver.received) == 1
    assert len(payment_intents_of(stripe_resource, tenant)) == 1
    assert email["message_id"] == mail_sink.to(buyer(tenant))[0]["Message-ID"]
    assert webhook["webhook_id"] == receiver.received[0].headers["webhook-id"]


def payment_job_with_notification_resources() -> dg.JobDefinition:
    """payment_job bound to the session's servers, rebuilt in whichever process runs it."""
    from resources import (
        EffectLedgerResource,
        NotificationSettingsResource,
        RedisResource,
        StripeResource,
    )

    resources = {
        "stripe": StripeResource(
            secret_key="sk_test_queue_pipelines",
            api_base=os.environ["QP_TEST_STRIPE_URL"],
            max_network_retries=0,
        ),
        "effect_ledger": EffectLedgerResource(database_url=os.environ["QP_TEST_LEDGER_URL"]),
        "redis": RedisResource(url=os.environ["QP_TEST_REDIS_URL"]),
        "smtp": SmtpResource(
            host="127.0.0.1", port=int(os.environ["QP_TEST_SMTP_PORT"]), security="none"
        ),
        "webhooks": WebhookResource(
            secret=os.environ["QP_TEST_WEBHOOK_SECRET"],
            payment_url=os.environ["QP_TEST_WEBHOOK_URL"],
        ),
        "notification_settings": NotificationSettingsResource(),
    }
    return dg.Definitions(jobs=[payment_job], resources=resources).resolve_job_def("payment_job")


def test_resend_flag_sends_the_email_again_once(
    instance, notifying, intake, tenant, mail_sink, receiver
):
    intake.enqueue(payment(tenant, "pay-3", customer_email=buyer(tenant)))
    harness = IntakeHarness(instance, notifying, "payment")
    harness.drain()
    [original] = harness.results
    run_config = instance.get_run_by_id(original.run_id).run_config
    resend = {
        **run_config,
        "ops": {**run_config["ops"], "email_payment_confirmation": {"config": {"resend": True}}},
    }

    again = harness.job.execute_in_process(
        run_config=resend, instance=instance, resources=notifying, raise_on_error=False
    )

    assert again.success
    assert len(mail_sink.to(buyer(tenant))) == 2
    assert len(receiver.received) == 1  # only the e-mail was asked for again
    assert again.output_for_node("charge_payment").replayed


def test_an_email_that_fails_for_good_leaves_the_payment_and_settles_the_entry(
    instance, notifying, intake, tenant, tmp_path, receiver, stripe_resource
):
    sink = MailSink(tmp_path / "outbox").start()
    try:
        sink.handler.refuse_next_rcpt(f"550 5.1.1 <{buyer(tenant)}>: Recipient address rejected")
        smtp = SmtpResource(host="127.0.0.1", port=sink.port, security="none")
        intake.enqueue(payment(tenant, "pay-4", customer_email=buyer(tenant)))
        harness = IntakeHarness(instance, {**notifying, "smtp": smtp}, "payment")

        harness.drain()
        alerts = sink.to("operators@example.com")
    finally:
        sink.stop()

    [result] = harness.results
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "email_payment_confirmation"
    description = failure.step_failure_data.user_failure_data.description
    [intent] = payment_intents_of(stripe_resource, tenant)
    assert "550 5.1.1" in description and "Recipient address rejected" in description
    assert f"Payment {intent.id} succeeded, and stands" in description
    assert result.output_for_node("charge_payment").payment_intent_id == intent.id
    assert len(receiver.received) == 1  # the webhook step went ahead on its own
    run = instance.get_run_by_id(result.run_id)
    assert run.tags[tags.NOTIFICATION_FAILED] == "email_payment_confirmation"
    [alert] = alerts
    assert "failed for good" in alert["Subject"]
    assert result.run_id in alert.get_body(("plain",)).get_content()
    # Settled, not dead-lettered: the payment did not fail.
    assert intake.client.xlen(intake.stream_key("payment")) == 0
    assert intake.client.xlen(intake.dead_letter_key) == 0
    # A late duplicate of the request is acked without a run or a second charge.
    intake.enqueue(payment(tenant, "pay-4", customer_email=buyer(tenant)))
    assert harness.tick() == []
    assert intake.client.xlen(intake.stream_key("payment")) == 0
    assert len(payment_intents_of(stripe_resource, tenant)) == 1


def test_a_refund_run_emails_the_stripe_customer_and_tells_the_platform(
    instance, notifying, intake, tenant, mail_sink, receiver
):
    intake.enqueue(payment(tenant, "pay-5", amount=3000, customer_email=buyer(tenant)))
    IntakeHarness(instance, notifying, "payment").drain()
    intent_id = receiver.received[0].event["data"]["payment_intent_id"]
    intake.enqueue(
        Envelope(
            type="refund",
            tenant_id=tenant,
            idempotency_key="refund-5",
            payload=RefundPayload(payment_intent_id=intent_id, amount=1000, order_id="order-pay-5"),
        )
    )
    harness = IntakeHarness(instance, notifying, "refund")

    assert harness.drain() == 1

    assert harness.results[0].success
    refund_mail = [m for m in mail_sink.to(buyer(tenant)) if "refund" in m["Subject"]]
    [mail] = refund_mail
    assert mail["Subject"] == "Tickets: refund of 10.00 USD for order order-pay-5"
    refund_event = receiver.received[-1].event
    assert refund_event["type"] == "refund.issued"
    assert refund_event["data"]["remaining_refundable"] == 2000
    assert receiver.received[-1].signature_valid


def notification(tenant: str, key: str, template: str, context: dict, to: str) -> Envelope:
    return Envelope(
        type="notification",
        tenant_id=tenant,
        idempotency_key=key,
        payload=NotificationPayload(template=template, recipient=to, context=context),
    )


def test_notification_job_sends_an_nft_delivered_mail_once(
    instance, notifying, intake, tenant, mail_sink
):
    context = {
        "buyer_name": "Ada",
        "order_id": "1042",
        "event": "Night Concert",
        "seat": "B12",
        "wallet": "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM",
        "explorer_url": "https://explorer.solana.com/address/So11111111111111111111111111111111111111112",
    }
    for _ in range(2):  # a duplicate request
        intake.enqueue(notification(tenant, "nft-1", "nft_delivered", context, buyer(tenant)))
    harness = IntakeHarness(instance, notifying, "notification")

    assert harness.drain() == 1

    [mail] = mail_sink.to(buyer(tenant))
    assert mail["Subject"] == "Tickets: your ticket for Night Concert is in your wallet"
    assert f'href="{context["explorer_url"]}"' in mail.get_body(("html",)).get_content()
    assert intake.client.xlen(intake.stream_key("notification")) == 0


def test_a_template_missing_a_variable_fails_the_run_naming_it(
    instance, notifying, intake, tenant, mail_sink
):
    intake.enqueue(
        notification(
            tenant,
            "bad-1",
            "payment_failed",
            {"buyer_name": "Ada", "order_id": "1", "amount": "$1.00"},
            buyer(tenant),
        )
    )
    harness = IntakeHarness(instance, notifying, "notification")

    harness.drain()

    [result] = harness.results
    assert not result.success
    [letter] = intake.dead_letters()
    assert "'reason' is undefined" in letter["reason"]
    assert "email_notification" in letter["reason"]
    assert mail_sink.to(buyer(tenant)) == []


def test_nft_steps_tell_the_buyer_and_the_platform_for_a_mint_step(
    instance, notifying, tenant, mail_sink, receiver
):
    """What mint_job wires after its delivery step (docs/notifications.md)."""
    from queue_pipelines.jobs.notification import email_nft_delivered, webhook_nft_delivered

    @dg.op
    def delivered_nft() -> NftDelivery:
        return NftDelivery(
            tenant_id=tenant,
            idempotency_key="mint-1",
            order_id="1042",
            wallet="9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM",
            mint_address="So11111111111111111111111111111111111111112",
            event="Night Concert",
            seat="B12",
            buyer_email=buyer(tenant),
            buyer_name="Ada",
        )

    @dg.job
    def mint_shaped_job():
        nft = delivered_nft()
        email_nft_delivered(nft)
        webhook_nft_delivered(nft)

    for _ in range(2):
        result = mint_shaped_job.execute_in_process(instance=instance, resources=notifying)
        assert result.success

    [mail] = mail_sink.to(buyer(tenant))
    assert "So11111111111111111111111111111111111111112" in mail.get_body(("plain",)).get_content()
    [delivery] = receiver.received
    assert delivery.signature_valid
    assert delivery.event["type"] == "nft.delivered"


def test_a_declined_card_emails_the_buyer_once_through_notification_job(
    instance, notifying, intake, tenant, mail_sink
):
    intake.enqueue(
        payment(
            tenant,
            "declined-1",
            customer_email=buyer(tenant),
            payment_method="pm_card_chargeCustomerFail",
        )
    )
    payments = IntakeHarness(instance, notifying, "payment")
    payments.drain()
    [failed] = payments.results
    assert not failed.success
    run = instance.get_run_by_id(failed.run_id)
    sensor = defs.resolve_sensor_def("payment_failed_notice_sensor")
    for _ in range(2):  # a sensor tick repeated after a crash asks twice
        with dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=failed.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=run,
            resources=notifying,
        ) as context:
            sensor(context.for_run_failure())

    assert IntakeHarness(instance, notifying, "notification").drain() == 1

    [mail] = mail_sink.to(buyer(tenant))
    assert mail["Subject"] == "Tickets: your payment for order order-declined-1 did not go through"
    text = mail.get_body(("plain",)).get_content()
    assert "card declined" in text and "25.00 USD" in text
    [letter] = intake.dead_letters()  # the payment request itself, with Stripe's reason
    assert "card declined" in letter["reason"]
