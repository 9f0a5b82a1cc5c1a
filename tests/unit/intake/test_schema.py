"""The wire format: what is accepted, what is refused and how the refusal reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from queue_pipelines.currencies import format_amount
from queue_pipelines.intake.schema import (
    MAX_ENVELOPE_BYTES,
    Envelope,
    EnvelopeError,
    json_schema,
    parse_envelope,
)

DOCS = Path(__file__).resolve().parents[3] / "docs"


def envelope(**changes) -> dict:
    data = {
        "type": "refund",
        "version": 1,
        "tenant_id": "acme",
        "idempotency_key": "refund-7",
        "payload": {"payment_intent_id": "pi_123", "amount": 500},
    }
    data.update(changes)
    return data


def test_valid_envelope_round_trips():
    parsed = parse_envelope(json.dumps(envelope(priority=7)))
    assert parsed.request_key == "refund:acme:refund-7"
    assert parsed.priority == 7
    again = parse_envelope(parsed.to_wire())
    assert again == parsed


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"version": None}, "unsupported envelope version None"),
        ({"tenant_id": "has space"}, "tenant_id: String should match pattern"),
        ({"idempotency_key": ""}, "idempotency_key: String should have at least 1 character"),
        ({"priority": 101}, "priority: Input should be less than or equal to 100"),
        ({"payload": {"payment_intent_id": "ch_1"}}, "payload.payment_intent_id: String should"),
        ({"payload": {"payment_intent_id": "pi_1", "amount": 1.5}}, "payload.amount: Input should"),
        ({"payload": {"payment_intent_id": "pi_1", "extra": 1}}, "payload.extra: Extra inputs"),
        ({"payload": None}, "payload: Input should be a valid dictionary"),
        ({"surprise": True}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_refusals_name_the_field(changes, reason):
    with pytest.raises(EnvelopeError) as caught:
        parse_envelope(json.dumps(envelope(**changes)))
    assert reason in caught.value.reason


def test_missing_version_is_refused():
    data = envelope()
    del data["version"]
    with pytest.raises(EnvelopeError, match="version: Field required"):
        parse_envelope(json.dumps(data))


def test_size_limit_counts_bytes_not_characters():
    room = MAX_ENVELOPE_BYTES - len(json.dumps(envelope(idempotency_key="x")).encode())
    fits = envelope(payload={"payment_intent_id": "pi_1", "reason": None, "metadata": {}})
    assert parse_envelope(json.dumps(fits))
    too_big = json.dumps(envelope(tenant_id="é" * (room // 2 + 10)), ensure_ascii=False)
    assert len(too_big) <= MAX_ENVELOPE_BYTES < len(too_big.encode())
    with pytest.raises(EnvelopeError, match="bytes, over the 65536-byte limit"):
        parse_envelope(too_big)


def test_mint_payload_checks_wallet_name_and_uri():
    mint = {
        "order_id": "o1",
        "wallet": "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin",
        "name": "Ticket #1",
        "symbol": "TIX",
        "attributes": {"event": "Show", "venue": "Hall", "seat": "A1", "date": "2026-12-01"},
    }
    assert parse_envelope(json.dumps(envelope(type="mint", payload=mint)))
    for field, value, reason in [
        ("wallet", "0OIl-not-base58", "payload.wallet: not a base58 Solana address"),
        ("name", "  ", "payload.name: must not be blank"),
        ("uri", "https://x/" + "a" * 200, "payload.uri: String should have at most 200"),
    ]:
        with pytest.raises(EnvelopeError, match=reason):
            parse_envelope(json.dumps(envelope(type="mint", payload={**mint, field: value})))


def test_currency_is_normalised_and_formatted():
    payment = {
        "order_id": "o",
        "amount": 1050,
        "currency": "EUR",
        "customer_email": "a@example.com",
        "payment_method": "pm_card_visa",
    }
    parsed = parse_envelope(json.dumps(envelope(type="payment", payload=payment)))
    assert parsed.payload.currency == "eur"
    assert format_amount(1050, "eur") == "10.50 EUR"
    assert format_amount(500, "jpy") == "500 JPY"
    assert format_amount(1500, "kwd") == "1.500 KWD"


def test_committed_json_schema_is_the_generated_one():
    """docs/intake.schema.json is generated (make schema); producers rely on it being current."""
    committed = json.loads((DOCS / "intake.schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema()))


def test_schema_describes_every_envelope_field():
    properties = json_schema()["properties"]
    assert set(properties) == set(Envelope.model_fields)
