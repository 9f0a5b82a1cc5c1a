"""A notification's context holds only its template's declared fields: strings of limited
length, no control characters, nothing a mail client would make a link of (issue #17)."""

from __future__ import annotations

import jinja2
import pytest
from jinja2 import meta

from queue_pipelines.intake.notification_context import TEMPLATE_FIELDS, link_in
from queue_pipelines.intake.payloads import TENANT_TEMPLATES
from queue_pipelines.intake.schema import EnvelopeError, envelope_from_dict
from queue_pipelines.notifications.templates import TEMPLATE_DIR

MINT = "So11111111111111111111111111111111111111112"


def notification(template: str, context: dict) -> dict:
    return {
        "type": "notification",
        "version": 1,
        "tenant_id": "acme",
        "idempotency_key": "n-1",
        "payload": {"template": template, "recipient": "ada@example.com", "context": context},
    }


def refusal(template: str, context: dict) -> str:
    with pytest.raises(EnvelopeError) as caught:
        envelope_from_dict(notification(template, context))
    [problem] = caught.value.problems
    assert problem["field"] == "payload.context"
    return problem["message"]


def test_every_tenant_template_declares_only_variables_it_renders():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR))
    assert set(TEMPLATE_FIELDS) == set(TENANT_TEMPLATES)
    for template, fields in TEMPLATE_FIELDS.items():
        used: set[str] = set()
        for part in (f"{template}.subject.txt", f"{template}.txt", f"{template}.html"):
            source = env.loader.get_source(env, part)[0]
            used |= meta.find_undeclared_variables(env.parse(source))
        # mint_address is what nft_delivered's explorer_url is built from, by the job.
        renders = {"explorer_url": "mint_address"}
        declared = {name for name in fields if name not in renders.values()}
        assert declared == used - {"brand", *renders}, template


def test_the_fields_a_platform_mail_uses_are_accepted():
    cases = {
        "payment_confirmation": {
            "buyer_name": "Ada Lovelace",
            "order_id": "1042",
            "amount": "25.00 USD",
            "payment_id": "pi_3Abc",
        },
        "payment_failed": {
            "buyer_name": "Zoë O'Brien-Müller",
            "order_id": "A-1042_b",
            "amount": "¥2,500",
            "reason": "card declined: Your card was declined. (generic_decline)",
        },
        "refund_issued": {
            "buyer_name": "Ada",
            "order_id": None,
            "payment_id": "pi_1",
            "amount": "10.00 EUR",
            "refund_id": "re_1",
        },
        "nft_delivered": {
            "buyer_name": "Ada",
            "order_id": "1042",
            "event": "Night Concert, St. Mary's Hall",
            "seat": "Row 12, Seat 4",
            "wallet": MINT,
            "mint_address": MINT,
        },
    }
    for template, context in cases.items():
        envelope = envelope_from_dict(notification(template, context))
        assert dict(envelope.payload.context) == context


@pytest.mark.parametrize(
    ("template", "context", "says"),
    [
        ("nft_delivered", {"explorer_url": "https://evil.example/login"}, "not a field"),
        ("payment_confirmation", {"reason": "x"}, "not a field of template"),
        ("payment_confirmation", {"buyer_name": "a" * 101}, "over 100 characters"),
        ("payment_failed", {"reason": "r" * 301}, "over 300 characters"),
        ("payment_confirmation", {"amount": 2500}, "must be a string, not int"),
        ("payment_confirmation", {"buyer_name": {"first": "Ada"}}, "must be a string"),
        ("payment_confirmation", {"order_id": None}, "not null"),
        ("payment_confirmation", {"buyer_name": "Ada\r\nBcc: x"}, "control character"),
        ("payment_confirmation", {"order_id": "10 42"}, "letters, digits"),
        ("payment_confirmation", {"payment_id": "ch_1"}, "Stripe id pi_"),
        ("nft_delivered", {"wallet": "0xabc"}, "Solana address"),
        ("payment_failed", {"reason": "verify at https://evil.example"}, "looks like a link"),
        ("payment_failed", {"reason": "call evil-bank.com now"}, "looks like a link"),
        ("payment_confirmation", {"order_id": "claim.refund-now.com"}, "looks like a link"),
        ("nft_delivered", {"event": "Gig — www.evil.example"}, "looks like a link"),
        ("nft_delivered", {"seat": "write help@evil.example"}, "looks like a link"),
        ("payment_failed", {"reason": "EVIL．COM"}, "looks like a link"),  # full-width dot
        ("payment_failed", {"reason": "evil\u200b.com"}, "looks like a link"),  # zero-width
        ("payment_failed", {"reason": "javascript:alert(1)"}, "looks like a link"),
    ],
)
def test_what_is_refused_at_intake_names_the_field(template, context, says):
    message = refusal(template, context)
    [name] = context
    assert message.startswith(f"{name}: ") and says in message


def test_every_problem_is_named_at_once():
    message = refusal("payment_confirmation", {"summary": "x", "buyer_name": "see x.com"})
    assert "summary: not a field" in message and "buyer_name: looks like a link" in message


@pytest.mark.parametrize(
    "text", ["Ada Lovelace", "25.00 USD", "U.S. Tour", "e.g. this", "No. 5", "1.5 hours"]
)
def test_plain_text_is_not_a_link(text):
    assert not link_in(text)


def test_a_payment_failed_notice_for_a_link_shaped_payment_still_builds():
    """The payment intake allows names and order ids the notification intake does not; the
    notice the payment job enqueues for a declined card must not fail on them."""
    from queue_pipelines.intake.payloads import PaymentPayload
    from queue_pipelines.notifications.events import payment_failed_request

    payment = PaymentPayload(
        order_id="refund.example",
        amount=2500,
        currency="usd",
        customer_email="ada@example.com",
        customer_name="Ada, claim at https://evil.example",
        payment_method="pm_card_visa",
    )
    envelope = payment_failed_request("acme", "k1", payment, "see https://evil.example " * 20)
    assert dict(envelope.payload.context) == {
        "buyer_name": "there",
        "order_id": "refund-example",
        "amount": "25.00 USD",
        "reason": "the card was declined",
    }
