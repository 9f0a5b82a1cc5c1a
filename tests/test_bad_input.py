"""Entries that do not match the wire format are dead-lettered with a reason; none is lost."""

from __future__ import annotations

import json

from queue_pipelines.intake.streams import ENVELOPE_FIELD
from tests.harness import IntakeHarness
from tests.stripe_sandbox import payment_intents_of


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
    assert harness.drain() == 3

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
