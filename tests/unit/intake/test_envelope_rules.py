"""The envelope rules a tick applies to every entry (parse_envelope, envelope_from_dict and
envelope_of): which entries are refused, and that the reason says why."""

from __future__ import annotations

import json

import pytest

from queue_pipelines.intake.dispatch import envelope_of
from queue_pipelines.intake.schema import (
    MAX_ENVELOPE_BYTES,
    EnvelopeError,
    envelope_from_dict,
    parse_envelope,
)
from queue_pipelines.intake.streams import IntakeEntry
from tests.support.envelopes import payment, payment_wire


def refusal(raw, expected_type=None) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as caught:
        if isinstance(raw, str | bytes):
            parse_envelope(raw, expected_type)
        else:
            envelope_from_dict(raw, expected_type)
    return caught.value


def test_a_valid_envelope_parses_from_str_and_bytes_alike():
    wire = payment("t1", "k1").to_wire()
    parsed = parse_envelope(wire, expected_type="payment")
    assert parsed == parse_envelope(wire.encode()) == envelope_from_dict(json.loads(wire))
    assert parsed.to_wire() == wire and parsed.request_key == "payment:t1:k1"


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        (2, "unsupported envelope version 2: supported [1]"),
        (True, "unsupported envelope version True"),  # JSON true equals 1 in Python
        (1.0, "unsupported envelope version 1.0"),
        ("1", "unsupported envelope version '1'"),
    ],
)
def test_only_the_integer_version_1_is_accepted(version, reason):
    assert refusal(payment_wire(version=version)).reason.startswith(reason)


def test_a_missing_version_is_named_before_anything_else():
    data = payment_wire(version=None, payload={"amount": "not even close"})
    assert refusal(data).reason == "version: Field required (supported: [1])"


@pytest.mark.parametrize("job_type", ["", "charge", 7, None])
def test_an_unknown_type_is_refused_naming_the_known_ones(job_type):
    data = payment_wire()
    data["type"] = job_type
    reason = refusal(data).reason
    assert reason.startswith(f"unknown job type {job_type!r}: expected one of payment, refund")


def test_a_type_on_the_wrong_stream_is_refused():
    reason = refusal(json.dumps(payment_wire()), expected_type="refund").reason
    assert reason == "job type 'payment' does not belong on the refund stream"


def test_payload_problems_are_named_field_by_field():
    data = payment_wire()
    data["payload"] = {**data["payload"], "amount": 0, "currency": "xyz"}
    error = refusal(data)
    fields = [p["field"] for p in error.problems]
    assert fields == ["payload.amount", "payload.currency"]
    assert "payload.amount: Input should be greater than 0" in error.reason
    assert "payload.currency: unknown currency 'xyz'" in error.reason


def test_envelope_problems_after_the_payload_are_named_too():
    error = refusal(payment_wire(tenant_id="a b", priority=500))
    assert [p["field"] for p in error.problems] == ["tenant_id", "priority"]


@pytest.mark.parametrize("data", [[], "payment", 3, None])
def test_an_envelope_must_be_a_json_object(data):
    assert refusal(json.dumps(data)).reason.startswith("envelope must be a JSON object, got")


def test_bad_json_is_refused():
    assert refusal('{"type": "payment",').reason.startswith("invalid JSON:")


def test_bytes_that_are_not_utf8_are_refused():
    assert refusal(b'{"type": "\xff"}').reason.startswith("invalid JSON:")


def test_a_string_holding_lone_surrogates_is_refused_as_not_utf8():
    # What a Redis reply decoded with surrogateescape holds for bytes that are not UTF-8.
    raw = b'{"type": "pay\xffment"}'.decode("utf-8", "surrogateescape")
    assert refusal(raw).reason.startswith("envelope is not valid UTF-8:")


def test_absurd_nesting_is_refused_not_crashed_on():
    nested = "[" * 30_000 + "]" * 30_000  # within the size limit, past the recursion limit
    assert len(nested) <= MAX_ENVELOPE_BYTES
    assert refusal(nested).reason.startswith("invalid JSON:")


def test_the_size_limit_is_on_bytes_and_checked_before_parsing():
    over = " " * (MAX_ENVELOPE_BYTES + 1)  # not even JSON: the size is what is named
    assert refusal(over).reason == (
        f"envelope is {MAX_ENVELOPE_BYTES + 1} bytes, over the {MAX_ENVELOPE_BYTES}-byte limit"
    )
    at_limit = json.dumps(payment_wire()).ljust(MAX_ENVELOPE_BYTES)
    assert parse_envelope(at_limit).idempotency_key == "k1"


def test_to_wire_refuses_what_the_sensor_would_refuse_for_size():
    envelope = payment("t1", "k1")
    big = envelope.model_copy(update={"idempotency_key": "k" * MAX_ENVELOPE_BYTES})
    with pytest.raises(EnvelopeError, match="-byte limit"):
        big.to_wire()


def test_envelope_of_an_entry_without_an_envelope_field_lists_its_fields():
    entry = IntakeEntry("payment", "1-0", {"b": "1", "a": "2"})
    with pytest.raises(EnvelopeError, match=r"no 'envelope' field \(fields: a, b\)"):
        envelope_of(entry, "payment")


def test_envelope_of_turns_any_failure_into_an_envelope_error(monkeypatch):
    import queue_pipelines.intake.dispatch as dispatch

    def crash(_raw, expected_type=None):
        raise KeyError("surprise")

    monkeypatch.setattr(dispatch, "parse_envelope", crash)
    entry = IntakeEntry("payment", "1-0", {"envelope": "{}"})
    with pytest.raises(EnvelopeError, match="unreadable entry: KeyError: 'surprise'"):
        envelope_of(entry, "payment")


def _with_note(note_json: str) -> str:
    """A payment envelope's JSON text whose payload.metadata.note is `note_json` as written."""
    return json.dumps(payment_wire()).replace(
        '"metadata": {}', f'"metadata": {{"note": {note_json}}}'
    )


@pytest.mark.parametrize(
    "raw",
    [
        _with_note('"\\ud800"'),  # a JSON escape of a lone surrogate
        _with_note('"\\uDC80"'),  # upper-case hex
        _with_note('"caf\\u00e9 \\udfff"'),  # beside an escape that is no surrogate
        _with_note('"\\ud83d"').encode(),  # bytes in, half a pair
        json.dumps(payment_wire()).replace('"metadata": {}', '"metadata": {"\\udcff": "x"}'),
        # UTF-8 bytes of a surrogate: json.loads decodes bytes with surrogatepass
        _with_note('"x"').replace('"x"', '"X"').encode().replace(b'"X"', b'"\xed\xb2\x80"'),
        # UTF-16 text (json.loads detects it): no ASCII byte string at all
        _with_note('"\\udcff"').encode("utf-16-le"),
    ],
)
def test_a_lone_surrogate_is_found_however_the_text_spells_it(raw):
    """parse_envelope skips the walk for lone surrogates when the JSON text cannot hold one;
    every spelling that decodes to one is still refused, naming where."""
    reason = refusal(raw, "payment").reason
    assert reason.startswith("envelope is not valid UTF-8: payload.metadata.")
    assert "holds a lone surrogate" in reason


@pytest.mark.parametrize(
    "note_json",
    [
        '"\\ud83d\\ude00"',  # a whole pair: one character, not a surrogate
        '"\\\\ud800"',  # an escaped backslash: the text \ud800, not an escape
        '"caf\\u00e9"',
    ],
)
def test_escapes_that_decode_to_text_are_accepted(note_json):
    parsed = parse_envelope(_with_note(note_json), "payment")
    assert parsed.payload.metadata["note"] == json.loads(note_json)


def test_nesting_is_checked_by_depth_not_by_the_brackets_in_strings():
    brackets = "[{" * 20  # inside a string: text, not nesting
    assert parse_envelope(_with_note(json.dumps(brackets)), "payment").payload.metadata
    deep = json.dumps(payment_wire(extra=[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]))
    assert refusal(deep, "payment").reason == "envelope is nested deeper than 16 levels"
    assert refusal(json.loads(deep), "payment").reason == refusal(deep, "payment").reason
