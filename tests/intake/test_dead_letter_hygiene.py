"""The DLQ commands on letters they cannot trust (issue #17, point 10), on a real Redis: text
output escapes control characters, a malformed letter is reported (by id) and the rest are
still listed and replayed, and a replay never acts for a request other than the letter's."""

from __future__ import annotations

import json

from queue_pipelines.intake.schema import envelope_from_dict
from queue_pipelines.intake.streams import request_digest
from tests.intake.test_dead_letters import dead_letter_request, payment, run

ESCAPE = "\x1b]0;owned\x07\x1b[2J"  # set the terminal's title, clear the screen


def raw_letter(intake, **fields) -> str:
    """A dead letter written straight to the stream, as a hand or another program might."""
    return intake.client.xadd(intake.dead_letter_key, fields)


def well_formed(intake, envelope: dict, request_key: str = "", job_type: str = "payment"):
    return raw_letter(
        intake,
        stream=intake.stream_key(job_type),
        entry_id="1-1",
        reason="run r failed: x",
        run_id="r",
        request_key=request_key,
        fields=json.dumps({"envelope": json.dumps(envelope)}),
        dead_lettered_at="2026-11-27T12:00:00+00:00",
    )


def test_text_output_escapes_control_characters(redis_url, key_prefix, intake):
    dead_letter_request(intake, payment("acme", "e1"), f"run r failed: card {ESCAPE}\r\ndeclined")
    rejected = payment("acme", "e2")
    rejected["tenant_id"] = f"acme{ESCAPE}"  # refused at intake: only the envelope names it
    intake.ensure_group("payment")
    entry_id = intake.client.xadd(intake.stream_key("payment"), {"envelope": json.dumps(rejected)})
    intake.read("payment", "0-0", count=10)
    intake.dead_letter("payment", [entry_id], "rejected: tenant_id: String should match pattern")
    letters = intake.dead_letters()

    code, listed, err = run(redis_url, key_prefix, "dlq", "list")
    assert code == 0, err
    for letter in letters:
        _, shown, _ = run(redis_url, key_prefix, "dlq", "show", letter["id"])
        for text in (listed, shown):
            assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "card \\x1b]0;owned\\x07\\x1b[2J\\r\\ndeclined" in listed
    assert "acme\\x1b]0;owned" in listed
    # JSON keeps the values as they are (json.dumps escapes them on its own).
    code, out, _ = run(redis_url, key_prefix, "dlq", "list", "--json")
    reasons = {letter["reason"] for letter in json.loads(out)}
    assert f"run r failed: card {ESCAPE}\r\ndeclined" in reasons
    assert "\x1b" not in out

    code, out, _ = run(redis_url, key_prefix, "request", "show", "payment:acme:e1")
    assert code == 0 and "\x1b" not in out and "card \\x1b]0;owned" in out


def test_a_malformed_letter_is_reported_and_the_rest_still_work(redis_url, key_prefix, intake):
    good_key = dead_letter_request(intake, payment("acme", "m1"), "run r failed: x")
    [good] = intake.dead_letters()
    malformed = {
        "no fields at all": raw_letter(intake, reason="hand-written"),
        "fields not JSON": raw_letter(
            intake, stream=intake.stream_key("payment"), entry_id="1-1", reason="r",
            fields="{not json", dead_lettered_at="2026-11-27T12:00:00+00:00",
        ),
        "fields not an object": raw_letter(
            intake, stream=intake.stream_key("payment"), entry_id="1-2", reason="r",
            fields="[1, 2]", dead_lettered_at="2026-11-27T12:00:00+00:00",
        ),
    }  # fmt: skip

    code, out, err = run(redis_url, key_prefix, "dlq", "list")
    assert code == 0, err
    assert good["id"] in out
    for letter_id in malformed.values():
        assert f"{letter_id}  " in out
    assert "malformed dead letter: missing stream, entry_id, fields, dead_lettered_at" in out
    assert "malformed dead letter: 'fields' is not JSON" in out
    assert "malformed dead letter: 'fields' is not an object of strings" in out
    code, out, _ = run(redis_url, key_prefix, "dlq", "list", "--json")
    assert code == 0
    assert {x["id"]: bool(x["malformed"]) for x in json.loads(out)} == {
        good["id"]: False,
        **{letter_id: True for letter_id in malformed.values()},
    }
    code, out, _ = run(redis_url, key_prefix, "dlq", "show", malformed["fields not JSON"])
    assert code == 0 and "malformed dead letter" in out
    code, out, _ = run(redis_url, key_prefix, "request", "show", good_key)
    assert code == 0 and good["id"] in out
    # Not an id Redis knows the shape of: "no such letter", not a crash.
    assert run(redis_url, key_prefix, "dlq", "show", "not-an-id")[0] == 1

    # Replay goes on past the malformed ones and says which they were.
    code, out, err = run(
        redis_url, key_prefix, "dlq", "replay", *malformed.values(), good["id"], "--yes"
    )
    assert code == 1
    for letter_id in malformed.values():
        assert f"error: dead letter {letter_id} is malformed" in err
    assert f"replayed {good['id']}" in out
    assert intake.client.xlen(intake.stream_key("payment")) == 1

    code, out, _ = run(redis_url, key_prefix, "dlq", "purge", *malformed.values(), "--yes")
    assert code == 0 and "purged 3" in out
    assert intake.dead_letters() == []


def test_replay_refuses_an_envelope_that_is_not_the_letters_request(redis_url, key_prefix, intake):
    """A crafted letter: alpha's request key, bravo's envelope. Replaying it would enqueue
    bravo's request and wipe bravo's failed outcome; it is refused and touches neither."""
    bravo = envelope_from_dict(payment("bravo", "k1"))
    intake.request_failed("payment", bravo.request_key, "card declined", "run-b")
    crafted = well_formed(intake, payment("bravo", "k1"), request_key="payment:alpha:k1")
    wrong_type = well_formed(intake, payment("alpha", "k2"), request_key="refund:alpha:k2")
    other_key = well_formed(intake, payment("alpha", "k3"), request_key="payment:alpha:k9")
    # No request key (rejected at intake): the stream still says what type it was.
    wrong_stream = well_formed(intake, payment("alpha", "k4"), job_type="refund")

    code, out, err = run(
        redis_url, key_prefix, "dlq", "replay", crafted, wrong_type, other_key, wrong_stream,
        "--yes",
    )  # fmt: skip

    assert code == 1 and out == ""
    assert (
        f"error: dead letter {crafted} was dead-lettered as request 'payment:alpha:k1', but its "
        "envelope names tenant_id 'bravo' where the letter's request key has 'alpha': not "
        "replayed"
    ) in err
    assert "envelope names type 'payment' where the letter's request key has 'refund'" in err
    assert f"{other_key} was dead-lettered as request 'payment:alpha:k9'" in err
    assert "another idempotency key" in err
    assert f"{wrong_stream} came from stream '{key_prefix}:intake:refund'" in err
    assert intake.client.exists(intake.stream_key("payment")) == 0
    assert intake.outcomes([bravo.request_key])[bravo.request_key].reason == "card declined"
    assert len(intake.dead_letters()) == 4  # refused letters stay

    # The letter's own request replays as before.
    alpha = envelope_from_dict(payment("alpha", "k1"))
    own = well_formed(intake, payment("alpha", "k1"), request_key=alpha.request_key)
    code, out, err = run(redis_url, key_prefix, "dlq", "replay", own, "--yes")
    assert code == 0, err
    [(_, fields)] = intake.client.xrange(intake.stream_key("payment"))
    replayed = envelope_from_dict(json.loads(fields["envelope"]))
    assert request_digest(replayed) == request_digest(alpha)
