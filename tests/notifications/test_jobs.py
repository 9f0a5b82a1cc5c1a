"""Notification steps in real runs: intake → sensor → payment/refund/notification runs →
e-mail through a real SMTP server and webhooks to a real receiver, each at most once."""

from __future__ import annotations

import pytest

from queue_pipelines import tags
from queue_pipelines.intake.payloads import NotificationPayload, RefundPayload
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.providers.webhook_signing import new_secret
from resources import SmtpResource, WebhookResource
from tests.conftest import with_notifier
from tests.payments.test_payment_flow import payment
from tests.support.harness import IntakeHarness, outcome_rows
from tests.support.mail_sink import MailSink
from tests.support.reexecution import reexecute_all
from tests.support.stripe_sandbox import payment_intents_of
from tests.support.webhook_receiver import WebhookReceiver

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
    )
    return with_notifier(resources, webhooks=webhooks)


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


def test_reexecuting_a_payment_run_sends_nothing_twice(
    instance, notifying, intake, tenant, mail_sink, receiver, stripe_resource, monkeypatch
):
    intake.enqueue(payment(tenant, "pay-2", customer_email=buyer(tenant)))
    harness = IntakeHarness(instance, notifying, "payment")
    harness.drain()
    [original] = harness.results
    assert original.success and len(mail_sink.to(buyer(tenant))) == 1
    # The intake has forgotten the outcome: the run does the whole request again, and the
    # effect ledger answers for the charge, the e-mail and the webhook.
    intake.client.delete(*intake.client.keys(f"{intake.prefix}:outcome:*"))

    success, rows = reexecute_all(
        instance, notifying, original.run_id, monkeypatch, receiver=receiver
    )

    assert success
    [row] = rows
    assert (row["charged"], row["email"], row["webhook"]) == (
        "earlier",
        "sent earlier",
        "sent earlier",
    )
    assert len(mail_sink.to(buyer(tenant))) == 1
    assert len(receiver.received) == 1
    assert len(payment_intents_of(stripe_resource, tenant)) == 1


def test_resend_flag_sends_the_notices_again_once_and_charges_nothing(
    instance, notifying, intake, tenant, mail_sink, receiver, stripe_resource
):
    intake.enqueue(payment(tenant, "pay-3", customer_email=buyer(tenant)))
    harness = IntakeHarness(instance, notifying, "payment")
    harness.drain()
    [original] = harness.results
    run_config = instance.get_run_by_id(original.run_id).run_config
    config = run_config["ops"]["charge_payments"]["config"]
    resend = {"ops": {"charge_payments": {"config": {**config, "resend": True}}}}

    again = harness.job.execute_in_process(
        run_config=resend, instance=instance, resources=notifying, raise_on_error=False
    )

    assert again.success
    [row] = outcome_rows(again)
    assert (row["charged"], row["email"], row["webhook"]) == ("earlier", "sent", "sent")
    assert len(mail_sink.to(buyer(tenant))) == 2
    assert len(receiver.received) == 2
    assert len(payment_intents_of(stripe_resource, tenant)) == 1


def test_an_email_that_fails_for_good_leaves_the_payment_and_settles_the_entry(
    instance, notifying, intake, tenant, tmp_path, receiver, stripe_resource
):
    sink = MailSink(tmp_path / "outbox").start()
    try:
        sink.handler.refuse_next_rcpt(f"550 5.1.1 <{buyer(tenant)}>: Recipient address rejected")
        smtp = SmtpResource(host="127.0.0.1", port=sink.port, security="none")
        intake.enqueue(payment(tenant, "pay-4", customer_email=buyer(tenant)))
        harness = IntakeHarness(instance, with_notifier(notifying, smtp=smtp), "payment")

        harness.drain()
        alerts = sink.to("operators@example.com")
    finally:
        sink.stop()

    [result] = harness.results
    assert result.success
    [row] = outcome_rows(result)
    [intent] = payment_intents_of(stripe_resource, tenant)
    assert (row["status"], row["payment_intent"]) == ("succeeded", intent.id)
    assert "550 5.1.1" in row["notification_failed"]
    assert "Recipient address rejected" in row["notification_failed"]
    assert row["webhook"] == "sent"  # the webhook went ahead on its own
    assert len(receiver.received) == 1
    run = instance.get_run_by_id(result.run_id)
    assert run.tags[tags.NOTIFICATION_FAILED] == "1"
    [alert] = alerts
    assert "failed" in alert["Subject"]
    body = alert.get_body(("plain",)).get_content()
    assert result.run_id in body and f"payment {intent.id} succeeded, and stands" in body
    # The payment is settled, not dead-lettered: it did not fail. The e-mail is a dead letter
    # of its own, the notification request that would send it again.
    assert intake.client.xlen(intake.stream_key("payment")) == 0
    [letter] = intake.dead_letters()
    assert letter["request_key"] == f"notification:{tenant}:pay-4.payment_confirmation"
    assert letter["stream"] == intake.stream_key("notification")
    assert "550 5.1.1" in letter["reason"]
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
        # The job links it with EXPLORER_URL_TEMPLATE; a producer never writes the link.
        "mint_address": "So11111111111111111111111111111111111111112",
    }
    explorer_url = f"https://explorer.solana.com/address/{context['mint_address']}"
    for _ in range(2):  # a duplicate request
        intake.enqueue(notification(tenant, "nft-1", "nft_delivered", context, buyer(tenant)))
    harness = IntakeHarness(instance, notifying, "notification")

    assert harness.drain() == 1

    [mail] = mail_sink.to(buyer(tenant))
    assert mail["Subject"] == "Tickets: your ticket for Night Concert is in your wallet"
    assert f'href="{explorer_url}"' in mail.get_body(("html",)).get_content()
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
    [row] = outcome_rows(result)
    assert row["status"] == "failed"
    [letter] = intake.dead_letters()
    assert "'reason' is undefined" in letter["reason"]
    assert letter["run_id"] == result.run_id
    assert mail_sink.to(buyer(tenant)) == []


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
    # The payment request arrives again (a producer's retry): it is dead-lettered on sight of
    # its recorded outcome, and no second payment_failed request is made.
    intake.enqueue(
        payment(
            tenant,
            "declined-1",
            customer_email=buyer(tenant),
            payment_method="pm_card_chargeCustomerFail",
        )
    )
    assert payments.tick() == []

    assert IntakeHarness(instance, notifying, "notification").drain() == 1

    [mail] = mail_sink.to(buyer(tenant))
    assert mail["Subject"] == "Tickets: your payment for order order-declined-1 did not go through"
    text = mail.get_body(("plain",)).get_content()
    assert "card declined" in text and "25.00 USD" in text
    # The payment request and its duplicate, each entry with Stripe's reason.
    letters = intake.dead_letters()
    assert [letter["request_key"] for letter in letters] == [f"payment:{tenant}:declined-1"] * 2
    assert all("card declined" in letter["reason"] for letter in letters)
