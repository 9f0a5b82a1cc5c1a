"""`queue-pipelines dlq` on the in-memory intake: listing by filter with what producers wrote
escaped, showing one letter, replay and purge behind their confirmation, and the argument
checks that answer 2 and touch nothing. On a real Redis, with the whole CLI, it is
tests/intake/test_dead_letters.py's."""

from __future__ import annotations

import io
import json

from queue_pipelines.cli import build_parser
from queue_pipelines.intake.dlq_cli import run_dlq
from queue_pipelines.intake.schema import parse_envelope
from tests.support.envelopes import payment
from tests.support.memory_intake import MemoryIntake


def dead_letter(intake: MemoryIntake, tenant: str, key: str, reason: str) -> str:
    """A payment request taken by a run and dead-lettered with `reason`, as a run does."""
    envelope = payment(tenant, key)
    [entry_id] = intake.enqueue_many([envelope])
    intake.read("payment", "0-0", 100)
    intake.track("payment", envelope.request_key, [entry_id])
    intake.dead_letter_request("payment", envelope.request_key, reason, run_id="r-1")
    return envelope.request_key


def dlq(intake: MemoryIntake, *argv: str, answer: str = "") -> tuple[int, str, str]:
    args = build_parser().parse_args(["dlq", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = run_dlq(intake, args, out, err, io.StringIO(answer))
    return code, out.getvalue(), err.getvalue()


def listed(intake: MemoryIntake, *filters: str) -> list[dict]:
    code, out, _ = dlq(intake, "list", "--json", *filters)
    assert code == 0
    return json.loads(out)


def test_list_filters_and_escapes_what_producers_wrote(intake):
    dead_letter(intake, "acme", "a1", "card declined \x1b[2J")
    dead_letter(intake, "globex", "g1", "timeout")

    assert [letter["tenant_id"] for letter in listed(intake)] == ["globex", "acme"]
    assert [letter["tenant_id"] for letter in listed(intake, "--reason", "DECLINED")] == ["acme"]
    assert listed(intake, "--tenant", "nobody") == []
    _, out, _ = dlq(intake, "list", "--tenant", "acme")
    assert "payment acme entry" in out and "card declined \\x1b[2J" in out and "\x1b" not in out


def test_show_prints_one_letter_with_its_entry(intake):
    dead_letter(intake, "acme", "a1", "card declined")
    (letter,) = listed(intake)

    code, out, _ = dlq(intake, "show", letter["id"])
    assert code == 0 and "request_key: payment:acme:a1" in out and "fields: {" in out
    assert dlq(intake, "show", "0-1")[0] == 1


def test_replay_asks_first_then_enqueues_the_original_key_again(intake):
    dead_letter(intake, "acme", "a1", "card declined")
    (letter,) = listed(intake)
    before = intake.stream_ids("payment")

    code, _, err = dlq(intake, "replay", letter["id"], answer="n\n")
    assert (code, intake.stream_ids("payment")) == (1, before) and "nothing done" in err

    code, out, _ = dlq(
        intake, "replay", letter["id"], "--yes", "--json", "--payload", '{"amount": 99}'
    )
    assert code == 0
    (replayed,) = json.loads(out)["replayed"]
    assert replayed["request_key"] == "payment:acme:a1"
    (entry,) = [e for e in intake.read("payment", "0-0", 100) if e.entry_id == replayed["entry_id"]]
    assert parse_envelope(entry.raw_envelope).payload.amount == 99


def test_purge_needs_a_selection_and_a_yes(intake):
    dead_letter(intake, "acme", "a1", "card declined")
    dead_letter(intake, "globex", "g1", "timeout")

    assert dlq(intake, "purge")[0] == 2  # neither ids, filters nor --all
    (acme,) = listed(intake, "--tenant", "acme")
    assert dlq(intake, "purge", acme["id"], "--tenant", "acme")[0] == 2  # ids and filters
    assert dlq(intake, "purge", "--all", answer="no\n")[0] == 1
    code, out, _ = dlq(intake, "purge", "--tenant", "acme", "--yes")
    assert (code, out) == (0, "purged 1 dead letter(s)\n")
    assert [letter["tenant_id"] for letter in listed(intake)] == ["globex"]


def test_replay_refuses_a_payload_that_is_not_one_json_object_for_one_letter(intake):
    dead_letter(intake, "acme", "a1", "card declined")
    dead_letter(intake, "acme", "a2", "card declined")

    for argv, said in [
        (("--tenant", "acme", "--payload", '{"amount": 1}'), "exactly one"),
        (("--tenant", "acme", "--reason", "x", "--payload", "{"), "no dead letters match"),
    ]:
        code, out, err = dlq(intake, "replay", "--yes", *argv)
        assert said in err + out
    (one, _) = listed(intake)
    assert "not JSON" in dlq(intake, "replay", one["id"], "--yes", "--payload", "{")[2]
    assert "JSON object" in dlq(intake, "replay", one["id"], "--yes", "--payload", "[1]")[2]
    assert len(listed(intake)) == 2
