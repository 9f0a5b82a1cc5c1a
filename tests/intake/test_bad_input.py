"""Entries that do not match the wire format are dead-lettered with a reason; none is lost."""

from __future__ import annotations

import json

import pytest
import redis

from queue_pipelines.intake.streams import ENVELOPE_FIELD
from tests.support.harness import IntakeHarness
from tests.support.stripe_sandbox import payment_intents_of


def wire(tenant: str, key: str, **changes) -> dict:
    envelope = {
        "id": f"id-{key}",
        "type": "payment",
        "version": 1,
        "tenant_id": tenant,
        "idempotency_key": key,
        "priority": 0,
        "created_at": "2026-11-27T12:00:00Z",
        "payload": {
            "order_id": f"order-{key}",
            "amount": 1999,
            "currency": "eur",
            "customer_email": "buyer@example.com",
            "payment_method": "pm_card_visa",
        },
    }
    payload_changes = changes.pop("payload", {})
    envelope.update(changes)
    envelope["payload"].update(payload_changes)
    return envelope


def test_bad_entries_are_dead_lettered_and_good_ones_still_run(
    instance, resources, intake, tenant, stripe_resource
):
    stream = intake.stream_key("payment")
    intake.ensure_group("payment")
    missing_field = wire(tenant, "missing")
    del missing_field["tenant_id"]
    bad = {
        "invalid JSON": "{not json",
        "missing field": json.dumps(missing_field),
        "zero amount": json.dumps(wire(tenant, "zero", payload={"amount": 0})),
        "negative amount": json.dumps(wire(tenant, "neg", payload={"amount": -5})),
        "unknown currency": json.dumps(wire(tenant, "cur", payload={"currency": "xyz"})),
        "unknown job type": json.dumps(wire(tenant, "type", type="subscription")),
        "unsupported version": json.dumps(wire(tenant, "ver", version=2)),
        "payload over 64 KiB": json.dumps(
            wire(tenant, "big", payload={"description": "x" * (64 * 1024)})
        ),
    }
    good = [json.dumps(wire(tenant, f"good{i}")) for i in range(3)]
    entry_ids = {}
    for name, raw in bad.items():
        entry_ids[name] = intake.client.xadd(stream, {ENVELOPE_FIELD: raw})
    good_ids = [intake.client.xadd(stream, {ENVELOPE_FIELD: raw}) for raw in good]
    no_envelope_id = intake.client.xadd(stream, {"body": "hello"})

    harness = IntakeHarness(instance, resources, "payment")
    assert harness.drain() == 1  # the three good ones, in one batch

    letters = {letter["entry_id"]: letter for letter in intake.dead_letters()}
    reasons = {name: letters[entry_id]["reason"] for name, entry_id in entry_ids.items()}
    assert reasons["invalid JSON"].startswith("rejected: invalid JSON")
    assert "tenant_id: Field required" in reasons["missing field"]
    assert "payload.amount: Input should be greater than 0" in reasons["zero amount"]
    assert "payload.amount: Input should be greater than 0" in reasons["negative amount"]
    assert "unknown currency 'xyz'" in reasons["unknown currency"]
    assert "unknown job type 'subscription'" in reasons["unknown job type"]
    assert "unsupported envelope version 2" in reasons["unsupported version"]
    assert "over the 65536-byte limit" in reasons["payload over 64 KiB"]
    assert "no 'envelope' field" in letters[no_envelope_id]["reason"]
    # The dead letter keeps the original entry, byte for byte.
    assert letters[entry_ids["invalid JSON"]]["fields"] == {ENVELOPE_FIELD: "{not json"}

    # Nothing lost: every entry written ended acked (gone, its run succeeded) or dead-lettered.
    written = {*entry_ids.values(), *good_ids, no_envelope_id}
    assert set(letters) == written - set(good_ids)
    assert intake.client.xlen(stream) == 0
    assert intake.stats().as_dict()["dead_letters"] == len(bad) + 1
    assert len(payment_intents_of(stripe_resource, tenant)) == 3


def test_entry_on_the_wrong_stream_is_dead_lettered(instance, resources, intake, tenant):
    intake.ensure_group("refund")
    raw = json.dumps(wire(tenant, "wrong"))  # a payment envelope on the refund stream
    entry_id = intake.client.xadd(intake.stream_key("refund"), {ENVELOPE_FIELD: raw})

    assert IntakeHarness(instance, resources, "refund").tick() == []

    [letter] = intake.dead_letters()
    assert letter["entry_id"] == entry_id
    assert "job type 'payment' does not belong on the refund stream" in letter["reason"]


def test_poison_entries_do_not_stop_the_stream(instance, resources, intake, tenant, redis_url):
    """Entries built to break the reader are dead-lettered like any bad input, and the
    valid entry behind them still runs."""
    stream = intake.stream_key("payment")
    intake.ensure_group("payment")
    raw_client = redis.Redis.from_url(redis_url)  # writes bytes as they are
    poison = {
        "unhashable version": json.dumps(wire(tenant, "p1", version=[1])).encode(),
        "unhashable type": json.dumps(wire(tenant, "p2", type=["payment"])).encode(),
        "boolean version": json.dumps(wire(tenant, "p3", version=True)).encode(),
        "deep nesting": b"[" * 5000,
        "not UTF-8": b'{"type": "payment", "tenant_id": "\xff\xfe"}',
        "naive timestamp": json.dumps(
            wire(tenant, "p4", created_at="2026-11-27T12:00:00")
        ).encode(),
    }
    ids = {
        name: raw_client.xadd(stream, {ENVELOPE_FIELD: raw}).decode()
        for name, raw in poison.items()
    }
    good_id = intake.client.xadd(stream, {ENVELOPE_FIELD: json.dumps(wire(tenant, "after"))})
    raw_client.close()

    harness = IntakeHarness(instance, resources, "payment")
    assert harness.drain() == 1

    letters = {letter["entry_id"]: letter["reason"] for letter in intake.dead_letters()}
    assert set(letters) == set(ids.values())
    assert "unsupported envelope version [1]" in letters[ids["unhashable version"]]
    assert "unknown job type ['payment']" in letters[ids["unhashable type"]]
    assert "unsupported envelope version True" in letters[ids["boolean version"]]
    assert "invalid JSON" in letters[ids["deep nesting"]]
    assert "not valid UTF-8" in letters[ids["not UTF-8"]]
    assert "created_at: Input should have timezone info" in letters[ids["naive timestamp"]]
    assert harness.results[0].success
    assert good_id not in letters
    assert intake.client.xlen(stream) == 0


def test_tenants_cannot_share_a_request_key():
    """Keys are joined with ':', so tenant ids may not contain one."""
    from queue_pipelines.intake.schema import EnvelopeError, envelope_from_dict

    with pytest.raises(EnvelopeError, match="tenant_id: String should match pattern"):
        envelope_from_dict(wire("acme:eu", "42"))
