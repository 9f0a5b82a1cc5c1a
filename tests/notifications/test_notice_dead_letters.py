"""A notice that fails for good after its effect is a dead letter of its own: the charge
stands and is not reported failed, the operators are alerted, and the letter is the
`notification` request that sends the e-mail again, for an operator to fix and replay."""

from __future__ import annotations

import uuid

from queue_pipelines.intake.dead_letters import get_dead_letter, replay_dead_letter
from queue_pipelines.intake.payloads import PaymentPayload
from queue_pipelines.ledger import effect_key
from queue_pipelines.notifications.events import payment_notice
from queue_pipelines.notifications.notifier import Notifier
from queue_pipelines.payments import charge_once
from queue_pipelines.providers.webhooks import WebhookSender
from resources import NotificationSettingsResource
from tests.support.harness import IntakeHarness


def test_an_email_that_cannot_be_built_after_a_charge_is_dead_lettered_and_replayable(
    instance, resources, intake, ledger, stripe_resource, smtp_resource, mail_sink, tenant
):
    buyer = f"buyer-{uuid.uuid4().hex[:8]}@example.com"
    # A name the mail header cannot carry (the intake refuses such names now; this one comes
    # from a request older than that rule).
    payment = PaymentPayload(
        order_id="o-1", amount=1500, currency="usd", customer_email=buyer,
        payment_method="pm_card_visa",
    ).model_copy(update={"customer_name": "Ada\r\nBcc: x@example.com"})  # fmt: skip
    charged = charge_once(
        stripe_resource.api(), ledger, tenant_id=tenant, idempotency_key="crlf",
        payment=payment, run_id="run-1", run_is_live=lambda _run_id: False,
    )  # fmt: skip
    settings = NotificationSettingsResource()
    notifier = Notifier(
        smtp=smtp_resource.sender(), webhooks=WebhookSender(secret="whsec_test"), ledger=ledger,
        profile_of=settings.profile, webhook_url_for=lambda _kind, _profile: None,
        operator_email=settings.operator_email, run_id="run-1",
        dead_letter=intake.dead_letter_notice,
    )  # fmt: skip

    told = notifier.tell(
        payment_notice(tenant, "crlf", payment, charged), f"payment {charged.payment_intent_id}"
    )

    assert "e-mail payment_confirmation failed" in told["notification_failed"]
    assert ledger.get(effect_key("payment", tenant, "crlf"))["status"] == "done"
    assert mail_sink.to(buyer) == []
    [raw] = intake.dead_letters()
    assert raw["request_key"] == f"notification:{tenant}:crlf.payment_confirmation"
    assert f"after payment {charged.payment_intent_id}" in raw["reason"]

    # The operator fixes the name and replays the letter: the e-mail goes, the letter goes.
    letter = get_dead_letter(intake, raw["id"])
    context = {
        "buyer_name": "Ada",
        "order_id": "o-1",
        "amount": charged.display_amount,
        "payment_id": charged.payment_intent_id,
    }
    replay_dead_letter(intake, letter, {"context": context})
    IntakeHarness(instance, resources, "notification").drain()

    [mail] = mail_sink.to(buyer)
    assert charged.payment_intent_id in mail.get_body(("plain",)).get_content()
    assert intake.dead_letters() == []
