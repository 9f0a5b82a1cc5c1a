"""Templates, tenant branding and Standard Webhooks signatures: the rules, without servers."""

from __future__ import annotations

import json

import pytest

from queue_pipelines.failures import PermanentError
from queue_pipelines.notifications.events import NftDelivery, nft_notice
from queue_pipelines.notifications.templates import TEMPLATES, render
from queue_pipelines.notifications.tenants import DEFAULT_PROFILE, TenantDirectory, TenantProfile
from queue_pipelines.providers import webhook_signing as signing

PAYMENT = {"buyer_name": "Ada", "order_id": "1042", "amount": "$25.00", "payment_id": "pi_1"}


def test_html_escapes_the_context_and_text_keeps_it_verbatim():
    rendered = render(
        "payment_confirmation",
        {**PAYMENT, "buyer_name": "<script>alert(1)</script> Ada"},
        DEFAULT_PROFILE,
    )
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Ada" in rendered.html
    assert "Hello <script>alert(1)</script> Ada," in rendered.text
    assert rendered.subject == "Tickets: payment of $25.00 received for order 1042"


def test_a_missing_variable_fails_naming_it():
    context = {k: v for k, v in PAYMENT.items() if k != "payment_id"}
    with pytest.raises(PermanentError) as caught:
        render("payment_confirmation", context, DEFAULT_PROFILE)
    assert "'payment_id' is undefined" in caught.value.reason
    assert caught.value.code == "template_variable_missing"


def test_tenant_branding_comes_from_the_profile_file(tmp_path):
    path = tmp_path / "tenants.json"
    path.write_text(
        json.dumps(
            {
                "acme": {
                    "name": "Acme <Tickets>",
                    "colour": "#d03030",
                    "support_email": "help@acme.example.com",
                }
            }
        )
    )
    directory = TenantDirectory.from_file(path)
    rendered = render("refund_issued", {**PAYMENT, "refund_id": "re_1"}, directory.profile("acme"))
    assert "background:#d03030" in rendered.html
    assert "Acme &lt;Tickets&gt;" in rendered.html
    assert "help@acme.example.com" in rendered.text
    assert directory.profile("someone-else") == DEFAULT_PROFILE


def test_a_colour_that_could_break_out_of_the_style_attribute_is_refused(tmp_path):
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"evil": {"colour": 'red;" onload="x'}}))
    with pytest.raises(ValueError, match="colour"):
        TenantDirectory.from_file(path)


def test_every_template_renders_with_its_documented_variables():
    contexts = {
        "payment_confirmation": PAYMENT,
        "payment_failed": {**PAYMENT, "reason": "card declined"},
        "refund_issued": {**PAYMENT, "refund_id": "re_1"},
        "nft_delivered": {
            "buyer_name": "Ada",
            "order_id": "1042",
            "event": "Concert",
            "seat": "A1",
            "wallet": "W",
            "explorer_url": "https://explorer.example/a",
        },
        "operator_alert": {"summary": "s", "details": "d", "run_id": "r", "tenant_id": "t"},
    }
    assert set(contexts) == set(TEMPLATES)
    for template, context in contexts.items():
        rendered = render(template, context, TenantProfile(name="Acme"))
        assert rendered.subject and "\n" not in rendered.subject
        assert "Acme" in rendered.html


def test_nft_notice_links_the_mint_on_the_explorer():
    delivery = NftDelivery(
        tenant_id="acme",
        idempotency_key="mint-1",
        order_id="1042",
        wallet="9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM",
        mint_address="So11111111111111111111111111111111111111112",
        event="Concert",
        seat="A1",
        buyer_email="ada@example.com",
    )
    notice = nft_notice(delivery, "https://explorer.solana.com/address/{address}?cluster=devnet")
    url = "https://explorer.solana.com/address/So11111111111111111111111111111111111111112?cluster=devnet"
    assert notice.context["explorer_url"] == url
    rendered = render(notice.template, notice.context, DEFAULT_PROFILE)
    assert f'href="{url.replace("&", "&amp;")}"' in rendered.html
    assert notice.event_data["explorer_url"] == url


def test_signature_matches_the_published_standard_webhooks_vector():
    # The test vector of the Standard Webhooks reference libraries.
    signature = signing.sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_accepts_a_fresh_delivery_and_refuses_tampering_and_replays():
    secret = signing.new_secret()
    body = b'{"type":"payment.succeeded"}'
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": "v1,bm9wZQ== " + signing.sign(secret, "msg_1", 1700000000, body),
    }
    assert signing.verify(secret, headers, body, now=1700000010) == "msg_1"
    with pytest.raises(signing.InvalidSignature):
        signing.verify(secret, headers, body + b" ", now=1700000010)
    with pytest.raises(signing.InvalidSignature, match="tolerance"):
        signing.verify(secret, headers, body, now=1700000000 + 301)
    with pytest.raises(signing.InvalidSignature):
        signing.verify(signing.new_secret(), headers, body, now=1700000010)


def test_a_refund_without_an_order_id_names_the_payment_not_an_order():
    from queue_pipelines.notifications.events import refund_notice
    from queue_pipelines.payments import RefundOutcome

    outcome = RefundOutcome("re_1", "succeeded", 500, "usd", "pi_3Abc", remaining=0)
    without = refund_notice("acme", "k1", None, outcome, "ada@example.com", "Ada")
    rendered = render(without.template, without.context, DEFAULT_PROFILE)
    for part in (rendered.subject, rendered.text, rendered.html):
        assert "order pi_" not in part and "order <strong>pi_" not in part
        assert "pi_3Abc" in part
    with_order = refund_notice("acme", "k1", "1042", outcome, "ada@example.com", "Ada")
    rendered = render(with_order.template, with_order.context, DEFAULT_PROFILE)
    assert "for order 1042" in rendered.subject and "for order 1042" in rendered.text


def test_a_signed_delivery_verifies_with_the_standardwebhooks_library():
    from standardwebhooks.webhooks import Webhook

    secret = signing.new_secret()
    body = b'{"type":"refund.issued","data":{"amount":500}}'
    now = int(__import__("time").time())
    headers = {
        "webhook-id": "msg_2",
        "webhook-timestamp": str(now),
        "webhook-signature": signing.sign(secret, "msg_2", now, body),
    }
    Webhook(secret).verify(body, headers, json_parse=False)
    assert signing.verify(secret, headers, body) == "msg_2"
    with pytest.raises(signing.InvalidSignature):
        signing.verify(secret, headers, body + b" ")
    with pytest.raises(ValueError, match="base64"):
        signing.sign("whsec_not base64!", "msg_2", now, body)
