"""Text fields of the wire format (issue #17): names and other one-line fields refuse control
characters, multi-line text refuses all but TAB/LF/CR, mail addresses are delivered in their
ASCII form, and build_email builds every address and name the intake accepts."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from email.utils import getaddresses

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from queue_pipelines.intake.payloads import (
    MintPayload,
    NotificationPayload,
    PaymentPayload,
    StripeEventPayload,
)
from queue_pipelines.intake.schema import EnvelopeError, envelope_from_dict, parse_envelope
from queue_pipelines.intake.text_fields import escape_controls, mail_address
from queue_pipelines.notifications.delivery import build_email
from queue_pipelines.notifications.templates import RenderedMessage
from tests.support.envelopes import payment_wire

WALLET = "11111111111111111111111111111112"  # the system program: valid base58 of 32 bytes


def payment_payload(**changes) -> dict:
    return {
        "order_id": "1042",
        "amount": 2500,
        "currency": "usd",
        "customer_email": "ada@example.com",
        "payment_method": "pm_card_visa",
        **changes,
    }


def mint_payload(**changes) -> dict:
    return {
        "order_id": "1042",
        "wallet": WALLET,
        "name": "Ticket",
        "symbol": "TIX",
        "attributes": {"event": "Gig", "venue": "Hall", "seat": "A1", "date": "2026-11-27"},
        **changes,
    }


def refusal(model, data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [(".".join(map(str, e["loc"])), e["msg"]) for e in caught.value.errors()]


CONTROLS = {
    "CR LF": "Ada\r\nBcc: x@evil.example",
    "LF": "Ada\nLovelace",
    "CR": "Ada\r",
    "NUL": "Ada\x00",
    "TAB": "Ada\tLovelace",
    "ESC": "\x1b[31mAda",
    "DEL": "Ada\x7f",
    "C1 next line": "Ada\x85Lovelace",
    "C1 CSI": "Ada\x9b2J",
    "line separator": "Ada\u2028Lovelace",
    "lone surrogate": "Ada\udcff",
}


@pytest.mark.parametrize("name", CONTROLS.values(), ids=CONTROLS.keys())
def test_a_buyers_name_with_a_control_character_is_refused_naming_the_field(name):
    [(field, message)] = refusal(PaymentPayload, payment_payload(customer_name=name))
    assert field == "customer_name"
    if name != CONTROLS["lone surrogate"]:  # pydantic's own "not a unicode string" refuses it
        assert "one line of text takes no control characters" in message
    assert message.isprintable()  # the refusal names the character, never holds it


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"buyer_name": "Ada\r\nLovelace"}, "buyer_name"),
        ({"name": "Ticket\n"}, "name"),
        ({"symbol": "T\x00X"}, "symbol"),
        ({"uri": "https://arweave.net/x\r\n"}, "uri"),
        ({"image": "x\x1b"}, "image"),
        (
            {"attributes": {"event": "Gig\r\n", "venue": "Hall", "seat": "A1", "date": "d"}},
            "attributes.event",
        ),
        (
            {"attributes": {"event": "Gig", "venue": "Hall", "seat": "A\n1", "date": "d"}},
            "attributes.seat",
        ),
    ],
)
def test_one_line_fields_of_a_mint_refuse_line_breaks(changes, field):
    [(where, message)] = refusal(MintPayload, mint_payload(**changes))
    assert where == field and "U+" in message


def test_multi_line_text_keeps_its_line_breaks_and_refuses_other_controls():
    text = "Row 3\n\tthe aisle seat\r\nenjoy"
    assert PaymentPayload.model_validate(payment_payload(description=text)).description == text
    assert MintPayload.model_validate(mint_payload(description=text)).description == text
    [(field, message)] = refusal(PaymentPayload, payment_payload(description="a\x00b"))
    assert field == "description"
    assert message.endswith("other than tab, line feed and carriage return")
    [(field, _)] = refusal(MintPayload, mint_payload(description="\x1b[2J"))
    assert field == "description"


def test_metadata_keys_are_one_line_and_values_are_text():
    ok = PaymentPayload.model_validate(payment_payload(metadata={"note": "two\nlines"}))
    assert ok.metadata == {"note": "two\nlines"}
    [(field, _)] = refusal(PaymentPayload, payment_payload(metadata={"note": "bell\x07"}))
    assert field == "metadata.note"
    [(field, _)] = refusal(PaymentPayload, payment_payload(metadata={"no\nte": "x"}))
    assert field.startswith("metadata.") and field.endswith("[key]")


def test_stripe_event_codes_are_one_line():
    event = {
        "event_id": "evt_1",
        "event_type": "charge.refunded",
        "created": 1,
        "object_id": "ch_1",
        "status": "succeeded\r\n",
    }
    [(field, _)] = refusal(StripeEventPayload, event)
    assert field == "status"
    reason = StripeEventPayload.model_validate({**event, "status": "ok", "reason": "a\nb"})
    assert reason.reason == "a\nb"


def test_the_envelope_id_is_one_line():
    with pytest.raises(EnvelopeError) as caught:
        envelope_from_dict(payment_wire(id="ref\r\n42"))
    assert caught.value.problems[0]["field"] == "id"


def test_a_dict_key_is_escaped_in_the_refusal():
    with pytest.raises(EnvelopeError) as caught:
        envelope_from_dict(payment_wire(payload=payment_payload(**{"\x1b[2Jx": 1})))
    assert "\x1b" not in caught.value.reason
    assert "payload.\\x1b[2Jx: Extra inputs are not permitted" in caught.value.reason


def test_a_lone_surrogate_escape_anywhere_is_refused_as_not_utf8():
    """JSON's "\\udcff" decodes to a lone surrogate: refused with where, before it could
    fail a serialization later (the request digest, the stored envelope)."""
    wire = payment_wire()
    wire["payload"]["metadata"] = {"note": "\udcff"}
    raw = json.dumps(wire)  # ensure_ascii: the surrogate travels as an escape
    assert "\\udcff" in raw
    with pytest.raises(EnvelopeError) as caught:
        parse_envelope(raw)
    assert caught.value.reason.startswith("envelope is not valid UTF-8: payload.metadata.note")
    notification = {
        "type": "notification",
        "version": 1,
        "tenant_id": "t1",
        "idempotency_key": "n1",
        "payload": {"template": "payment_failed", "recipient": "a@example.com"},
    }
    notification["payload"]["context"] = {"buyer_name": "x\ud800"}
    with pytest.raises(EnvelopeError, match="payload.context.buyer_name holds a lone surrogate"):
        parse_envelope(json.dumps(notification))


@pytest.mark.parametrize(
    ("given", "delivered"),
    [
        ("ada@example.com", "ada@example.com"),
        ("Ada@EXAMPLE.com", "Ada@example.com"),  # the mailbox name keeps its case
        ("ada@bücher.de", "ada@xn--bcher-kva.de"),
        ("ada@xn--bcher-kva.de", "ada@xn--bcher-kva.de"),
        ("ada@例え.jp", "ada@xn--r8jz45g.jp"),
    ],
)
def test_an_internationalized_domain_is_kept_in_its_idna_form(given, delivered):
    assert PaymentPayload.model_validate(payment_payload(customer_email=given)).customer_email == (
        delivered
    )
    assert mail_address(delivered) == delivered


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("jörg@example.com", "the part before the @ must be ASCII"),
        ("ada@example.com\r\n", "U+000D (carriage return)"),
        ("ada@exa\x00mple.com", "U+0000 (NUL)"),
        ("Ada <ada@example.com>", "not a deliverable e-mail address"),
        ("ada@localhost", "not a deliverable e-mail address"),
        ("not-an-address", "not a deliverable e-mail address"),
    ],
)
def test_an_address_that_cannot_be_delivered_is_refused_saying_why(address, says):
    for model, data in (
        (PaymentPayload, payment_payload(customer_email=address)),
        (MintPayload, mint_payload(buyer_email=address)),
        (NotificationPayload, {"template": "payment_failed", "recipient": address}),
    ):
        [(_, message)] = refusal(model, data)
        assert says in message


def test_escape_controls_makes_text_safe_for_a_terminal():
    assert escape_controls("a\x1b[2Jb\r\n\t\x00\x9b\u2028\udcffé") == (
        "a\\x1b[2Jb\\r\\n\\t\\x00\\x9b\\u2028\\udcffé"
    )
    assert escape_controls("Zoë O'Brien") == "Zoë O'Brien"


RENDERED = RenderedMessage("payment_confirmation", "Payment received", "text", "<p>html</p>")

_LABEL = st.text(alphabet=st.sampled_from("abcxyz019-üéßж例え"), min_size=1, max_size=12).filter(
    lambda label: not label.startswith("-") and not label.endswith("-")
)
_LOCAL = st.text(alphabet=st.sampled_from("abcXYZ09._+-!#'é"), min_size=1, max_size=20)
addresses = st.one_of(
    st.emails(),
    st.builds(
        lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
        _LOCAL,
        st.lists(_LABEL, min_size=1, max_size=3),
        st.sampled_from(["com", "de", "jp", "xn--p1ai", "рф"]),
    ),
    st.text(max_size=40),
)
names = st.one_of(
    st.none(),
    st.text(max_size=300),
    # What once made a second recipient appear: non-ASCII letters beside address specials.
    st.text(alphabet=st.sampled_from('Zoë Ünï,<>@"\\();:.=?xX_'), max_size=80),
    st.sampled_from(list(CONTROLS.values())),
)


def _intake_accepts(address: str, name: str | None) -> PaymentPayload | None:
    try:
        return PaymentPayload.model_validate(
            payment_payload(customer_email=address, customer_name=name)
        )
    except ValidationError:
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(address=addresses, name=names)
@example(address="ada@bücher.de", name="Zoë, x@evil.example")
@example(address="ada@example.com", name="é <x@evil.example>, y@evil.example")
@example(address="ada@example.com", name='Ada "the" \\ (Countess)')
@example(address="ada@example.com", name="=?utf-8?q?x@evil.example?=")
def test_build_email_builds_whatever_the_intake_accepts(address, name):
    payload = _intake_accepts(address, name)
    if payload is None:
        return
    message = build_email(
        RENDERED,
        recipient=payload.customer_email,
        recipient_name=payload.customer_name,
        sender="Tickets <tickets@example.com>",
    )
    wire = message.as_bytes()  # what goes to the SMTP server
    assert wire.isascii()  # no SMTPUTF8 needed
    # The one recipient smtplib sends to (RCPT TO), and the one a mail client reads back.
    assert [a for _, a in getaddresses([message["To"]])] == [payload.customer_email]
    received = message_from_bytes(wire, policy=policy.default)
    assert [a.addr_spec for a in received["To"].addresses] == [payload.customer_email]
    assert len(received.get_all("To")) == 1 and received.get_all("Bcc") is None


def test_build_email_refuses_what_the_intake_refuses():
    with pytest.raises(ValueError, match="must be ASCII"):
        build_email(RENDERED, recipient="jörg@example.com", sender="t@example.com")
    with pytest.raises(ValueError, match="carriage return"):
        build_email(
            RENDERED, recipient="a@example.com", recipient_name="A\r\nB", sender="t@example.com"
        )
    # The operators' own address may be an internal host.
    message = build_email(RENDERED, recipient="ops@mailhost", sender="t@example.com")
    assert message["To"].addresses[0].addr_spec == "ops@mailhost"
