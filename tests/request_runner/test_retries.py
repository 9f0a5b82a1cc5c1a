"""One retry owner inside a run: the senders make one try per call, and the request's
backoff (request_runner.with_backoff) tries a transient failure again, against a real SMTP
server (aiosmtpd) and a real HTTP receiver that fail a given number of times."""

from __future__ import annotations

import uuid

import pytest

from queue_pipelines.notifications.delivery import (
    build_email,
    send_email_once,
    send_webhook_once,
)
from queue_pipelines.notifications.events import Notice
from queue_pipelines.notifications.notifier import Notifier
from queue_pipelines.notifications.templates import render
from queue_pipelines.notifications.tenants import DEFAULT_PROFILE
from queue_pipelines.providers.webhook_signing import new_secret
from queue_pipelines.providers.webhooks import WebhookSender
from queue_pipelines.request_runner import (
    FAILED,
    SUCCEEDED,
    UNFINISHED,
    Backoff,
    Item,
    process_items,
)
from resources import NotificationSettingsResource
from tests.support.webhook_receiver import WebhookReceiver

# The production policy's shape (4 tries per run) without its pauses.
QUICK = Backoff(attempts=4, first_delay=0.01, max_delay=0.01, jitter=0.0)
LATER = "451 4.3.0 try again later"


@pytest.fixture
def receiver():
    with WebhookReceiver(new_secret()) as server:
        yield server


def notice(tenant: str, recipient: str) -> Notice:
    return Notice(
        tenant_id=tenant,
        idempotency_key=f"order-{uuid.uuid4().hex[:8]}",
        template="payment_confirmation",
        recipient=recipient,
        recipient_name="Ada",
        context={
            "buyer_name": "Ada",
            "order_id": "o-1",
            "amount": "25.00 USD",
            "payment_id": "pi_1",
        },
        webhook_kind="payment",
        event_type="payment.succeeded",
        event_data={"order_id": "o-1"},
    )


def run_email_requests(smtp_resource, ledger, recipients: list[str], backoff: Backoff):
    """Each recipient's e-mail as a request of a batch, sent at most once through the ledger,
    as a notification run sends it."""
    smtp = smtp_resource.sender()

    def handle(recipient: str) -> dict:
        rendered = render("payment_confirmation", notice("t", recipient).context, DEFAULT_PROFILE)
        mail = build_email(rendered, recipient=recipient, sender=smtp.from_address)
        return send_email_once(smtp, ledger, mail, key=f"email:{recipient}", run_id="run-1").result

    items = [Item(recipient, recipient) for recipient in recipients]
    return process_items(items, handle, concurrency=1, backoff=backoff)


def test_a_transient_smtp_reply_is_tried_again_by_the_request_and_sent_once(
    smtp_resource, mail_sink, ledger
):
    to = f"later-{uuid.uuid4().hex[:8]}@example.com"
    mail_sink.handler.refuse_next_rcpt(LATER, times=2)

    [result] = run_email_requests(smtp_resource, ledger, [to], QUICK)

    assert (result.status, result.attempts) == (SUCCEEDED, 3)
    assert mail_sink.handler.rcpt_replies == []  # each refusal was one try
    assert len(mail_sink.to(to)) == 1


def test_a_request_whose_smtp_server_keeps_refusing_is_left_unfinished_after_its_tries(
    smtp_resource, mail_sink, ledger
):
    to = f"never-{uuid.uuid4().hex[:8]}@example.com"
    mail_sink.handler.refuse_next_rcpt(LATER, times=QUICK.attempts + 2)
    try:
        [result] = run_email_requests(smtp_resource, ledger, [to], QUICK)
        # 4 tries in all, one per attempt: the sender adds none of its own.
        assert len(mail_sink.handler.rcpt_replies) == 2
    finally:
        mail_sink.handler.rcpt_replies.clear()
    assert (result.status, result.attempts, result.code) == (UNFINISHED, 4, "rcpt")
    assert mail_sink.to(to) == []


def test_a_permanent_smtp_reply_is_not_tried_again(smtp_resource, mail_sink, ledger):
    to = f"gone-{uuid.uuid4().hex[:8]}@example.com"
    mail_sink.handler.refuse_next_rcpt("550 5.1.1 no such user", times=2)
    try:
        [result] = run_email_requests(smtp_resource, ledger, [to], QUICK)
        assert mail_sink.handler.rcpt_replies == ["550 5.1.1 no such user"]
    finally:
        mail_sink.handler.rcpt_replies.clear()
    assert (result.status, result.attempts) == (FAILED, 1)


def test_a_webhook_answered_500_then_503_is_delivered_on_the_requests_third_try(receiver, ledger):
    receiver.answer(500, 503)  # then 200
    sender = WebhookSender(secret=receiver.secret, timeout_seconds=5)
    key = f"webhook:t:{uuid.uuid4().hex[:8]}:payment.succeeded"

    def handle(data: dict) -> dict:
        return send_webhook_once(
            sender, ledger, url=receiver.url, event_type="payment.succeeded", data=data,
            key=key, run_id="run-1",
        ).result  # fmt: skip

    [result] = process_items([Item("r", {"order_id": "o-1"})], handle, concurrency=1, backoff=QUICK)

    assert (result.status, result.attempts, result.summary["status"]) == (SUCCEEDED, 3, 200)
    assert [r.status for r in receiver.received] == [500, 503, 200]
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # one message
    assert all(r.signature_valid for r in receiver.received)
    assert len(receiver.processed) == 1


def notifier(smtp_resource, receiver, ledger, backoff: Backoff) -> Notifier:
    settings = NotificationSettingsResource()
    return Notifier(
        smtp=smtp_resource.sender(), webhooks=WebhookSender(secret=receiver.secret),
        ledger=ledger, profile_of=settings.profile,
        webhook_url_for=lambda _kind, _profile: receiver.url,
        operator_email=settings.operator_email, run_id="run-1", backoff=backoff,
    )  # fmt: skip


def test_a_notice_after_an_effect_is_tried_again_with_the_requests_backoff(
    smtp_resource, mail_sink, receiver, ledger
):
    to = f"told-{uuid.uuid4().hex[:8]}@example.com"
    mail_sink.handler.refuse_next_rcpt(LATER)
    receiver.answer(502)

    told = notifier(smtp_resource, receiver, ledger, QUICK).tell(notice("t", to), "payment pi_1")

    assert told == {"email": "sent", "webhook": "sent"}
    assert len(mail_sink.to(to)) == 1
    assert [r.status for r in receiver.received] == [502, 200]


def test_a_notice_failing_past_the_backoff_is_a_failed_notice_after_its_tries(
    smtp_resource, mail_sink, receiver, ledger
):
    to = f"told-{uuid.uuid4().hex[:8]}@example.com"
    receiver.answer(*[503] * 5)
    twice = Backoff(attempts=2, first_delay=0.01, max_delay=0.01, jitter=0.0)

    told = notifier(smtp_resource, receiver, ledger, twice).tell(notice("t", to), "payment pi_1")

    assert told["email"] == "sent"
    assert "webhook payment.succeeded failed" in told["notification_failed"]
    assert "HTTP 503" in told["notification_failed"]
    assert [r.status for r in receiver.received] == [503, 503]
