"""The records the intake keeps per request key, on IntakeStreams over an in-memory Redis:
the gateway's enqueue-once path and the sensor's first-request record are one record, a
settled request takes its dead letters along, and the operators' dead-letter commands go
through IntakeStreams (queue_pipelines/intake/dead_letters.py)."""

from __future__ import annotations

import json

import pytest

from queue_pipelines.intake.dead_letters import (
    DeadLetterFilter,
    find_dead_letters,
    get_dead_letter,
    remove_dead_letters,
    replay_dead_letter,
)
from queue_pipelines.intake.request_records import request_digest
from queue_pipelines.intake.schema import EnvelopeError
from tests.support.envelopes import payment
from tests.support.memory_intake import MemoryIntake, commands_sent

JOB = "payment"


def test_the_first_request_of_a_key_is_enqueued_and_a_repeat_answered_with_its_entry(intake):
    first = intake.enqueue_once(payment("t1", "k1"))
    # A retry: same payload, though its envelope id, time and priority are new.
    again = intake.enqueue_once(payment("t1", "k1", priority=-5))
    other = intake.enqueue_once(payment("t1", "k2"))

    assert (first.duplicate, first.conflict) == (False, False)
    assert (again.entry_id, again.duplicate, again.conflict) == (first.entry_id, True, False)
    assert other.entry_id != first.entry_id
    assert intake.stream_ids(JOB) == [first.entry_id, other.entry_id]
    assert first.request_key == "payment:t1:k1" and intake.request_recorded("payment:t1:k1")


def test_another_request_under_a_used_key_is_a_conflict_and_writes_nothing(intake):
    first = intake.enqueue_once(payment("t1", "k1", amount=100))

    changed = intake.enqueue_once(payment("t1", "k1", amount=999))

    assert (changed.entry_id, changed.duplicate, changed.conflict) == (first.entry_id, True, True)
    assert intake.stream_ids(JOB) == [first.entry_id]


def test_the_gateways_record_is_the_one_the_sensor_checks_entries_against(intake):
    envelope = payment("t1", "k1", amount=100)
    first = intake.enqueue_once(envelope)
    other = payment("t1", "k1", amount=999)

    seen = intake.remember_request(other.request_key, request_digest(other), "9-9")

    assert seen.entry_id == first.entry_id
    assert seen.conflicts_with(request_digest(other))
    assert not seen.conflicts_with(request_digest(envelope))


def with_payload(envelope, **changes):
    """The envelope with payload fields changed, validation skipped (models are frozen)."""
    return envelope.model_copy(update={"payload": envelope.payload.model_copy(update=changes)})


def test_an_envelope_over_the_size_limit_is_refused_before_anything_is_written(intake):
    # Built past validation: the stored form is what the limit applies to (64 KiB).
    envelope = with_payload(payment("t1", "big"), metadata={"note": "x" * 70_000})

    with pytest.raises(EnvelopeError, match="over the 65536-byte limit"):
        intake.enqueue_once(envelope)

    assert intake.stream_ids(JOB) == [] and not intake.request_recorded("payment:t1:big")


def test_a_request_that_succeeded_after_all_takes_its_dead_letters_along(intake):
    old = intake.enqueue(payment("t1", "k1"))
    intake.read(JOB, "0-0", 10)
    intake.track(JOB, "payment:t1:k1", [old])
    intake.request_failed(JOB, "payment:t1:k1", "card declined", "run-1")
    assert [letter["entry_id"] for letter in intake.dead_letters()] == [old]
    again = intake.enqueue(payment("t1", "k1"))
    intake.read(JOB, "0-0", 10)
    intake.track(JOB, "payment:t1:k1", [again])

    assert intake.request_succeeded(JOB, "payment:t1:k1", "run-2") == 1

    assert intake.dead_letters() == [] and intake.stream_ids(JOB) == []
    assert intake.pending_ids(JOB) == [] and intake.tracked("payment:t1:k1") == set()


def test_a_success_is_recorded_acked_and_its_dead_letters_removed_in_one_call(intake, monkeypatch):
    first = intake.enqueue(payment("t1", "k1"))
    intake.read(JOB, "0-0", 10)
    intake.track(JOB, "payment:t1:k1", [first])
    intake.request_failed(JOB, "payment:t1:k1", "run killed", "run-1")
    duplicates = intake.enqueue_many([payment("t1", "k1"), payment("t1", "k1")])
    intake.read(JOB, "0-0", 10)
    intake.track(JOB, "payment:t1:k1", duplicates)
    intake.settle(JOB, "payment:t1:other")  # Redis loads a script once: now it knows it
    sent = commands_sent(intake, monkeypatch)

    assert intake.request_succeeded(JOB, "payment:t1:k1", "run-2") == 2

    assert sent == ["EVALSHA"]
    [outcome] = intake.outcomes(["payment:t1:k1"]).values()
    assert (outcome.status, outcome.run_id, outcome.reason) == ("succeeded", "run-2", "")
    assert intake.client.hget(intake.keys.outcome("payment:t1:k1"), "at")
    assert intake.client.ttl(intake.keys.outcome("payment:t1:k1")) > 0
    assert intake.dead_letters() == [] and intake.stream_ids(JOB) == []
    assert intake.pending_ids(JOB) == [] and intake.tracked("payment:t1:k1") == set()


def test_settling_many_requests_is_one_pipeline_and_keeps_their_outcomes(intake, monkeypatch):
    keys = [f"payment:t1:m{i}" for i in range(3)]
    ids = intake.enqueue_many([payment("t1", f"m{i}") for i in range(3)])
    intake.read(JOB, "0-0", 10)
    for key, entry_id in zip(keys, ids, strict=True):
        intake.track(JOB, key, [entry_id])
    intake.request_succeeded(JOB, keys[0], "run-1")  # settled already: settling again is harmless
    recorded = intake.client.hgetall(intake.keys.outcome(keys[0]))
    sent = commands_sent(intake, monkeypatch)

    assert intake.settle_all(JOB, keys) == 2

    assert sent.count("PIPELINE") == 1 and "EVALSHA" not in sent
    assert intake.client.hgetall(intake.keys.outcome(keys[0])) == recorded
    assert intake.outcomes(keys[1:]) == {}  # settling records no outcome of its own
    assert intake.stream_ids(JOB) == [] and intake.pending_ids(JOB) == []


def failed_letter(intake: MemoryIntake, key: str, reason: str) -> dict:
    entry_id = intake.enqueue(payment("t1", key))
    intake.track(JOB, f"payment:t1:{key}", [entry_id])
    intake.request_failed(JOB, f"payment:t1:{key}", reason, "run-1")
    [letter] = find_dead_letters(intake, DeadLetterFilter(reason=reason))
    return letter


def test_dead_letters_are_found_shown_and_removed_through_the_intake(intake):
    declined = failed_letter(intake, "k1", "card declined")
    failed_letter(intake, "k2", "insufficient funds")
    intake.add_raw(JOB, {"body": "{}"})  # rejected by a tick: no request key
    intake.dead_letter(JOB, intake.stream_ids(JOB), "rejected: no envelope")

    assert declined["job_type"] == JOB and declined["tenant_id"] == "t1"
    assert declined["malformed"] is None
    assert json.loads(declined["fields"]["envelope"])["idempotency_key"] == "k1"
    assert get_dead_letter(intake, declined["id"])["reason"] == "card declined"
    assert get_dead_letter(intake, "not-an-id") is None
    assert len(find_dead_letters(intake, DeadLetterFilter(job_type=JOB))) == 3
    assert len(find_dead_letters(intake, DeadLetterFilter(job_type=JOB), limit=2)) == 2

    assert remove_dead_letters(intake, find_dead_letters(intake, DeadLetterFilter())) == 3

    assert intake.dead_letters() == []
    assert intake.client.scard(intake.keys.dead_letter_index("payment:t1:k1")) == 0


def test_a_replay_enqueues_the_envelope_again_and_reopens_its_request(intake):
    letter = failed_letter(intake, "k1", "card declined")

    entry_id, request_key = replay_dead_letter(intake, letter, {"payment_method": "pm_other"})

    assert request_key == "payment:t1:k1" and intake.stream_ids(JOB) == [entry_id]
    assert intake.outcomes([request_key]) == {}  # the failure is forgotten: it may run again
    assert intake.dead_letters() == []
    replayed = with_payload(payment("t1", "k1"), payment_method="pm_other")
    first = intake.remember_request(request_key, request_digest(replayed), "9-9")
    assert not first.conflicts_with(request_digest(replayed))


def test_a_ticks_lookups_take_a_few_commands_for_a_thousand_keys_and_miss_none(intake, monkeypatch):
    """remember_requests, outcomes, assignments and track_all run one script call per
    KEYS_PER_CALL keys, the calls in one round trip; each key is answered as on its own."""
    from queue_pipelines.intake.scripts import KEYS_PER_CALL

    count = 2 * KEYS_PER_CALL + 7
    keys = [f"payment:t1:k{i}" for i in range(count)]
    intake.remember_request(keys[3], "digest-before", "1-1")
    intake.request_succeeded(JOB, keys[5], "run-5")
    intake.assign_batch(JOB, "payment:t1:b1", {"key": "payment:t1:b1"}, {keys[8]: 2})

    sent = commands_sent(intake, monkeypatch)
    firsts = intake.remember_requests([(key, f"d{i}", f"9-{i}") for i, key in enumerate(keys)])
    outcomes = intake.outcomes(keys)
    assigned = intake.assignments(keys)
    intake.track_all(JOB, {key: [f"9-{i}"] for i, key in enumerate(keys)} | {keys[1]: []})

    # (a pipeline that holds a script first asks whether Redis knows it: SCRIPT EXISTS)
    assert [command for command in sent if not command.startswith("SCRIPT")] == ["PIPELINE"] * 4
    assert (firsts[keys[3]].entry_id, firsts[keys[3]].digest) == ("1-1", "digest-before")
    assert all(
        (firsts[key].entry_id, firsts[key].digest) == (f"9-{i}", f"d{i}")
        for i, key in enumerate(keys)
        if i != 3
    )
    assert list(outcomes) == [keys[5]] and outcomes[keys[5]].succeeded
    assert outcomes[keys[5]].run_id == "run-5" and outcomes[keys[5]].reason == ""
    assert {key: (a.batch_key, a.attempt) for key, a in assigned.items()} == {
        keys[8]: ("payment:t1:b1", 2)
    }
    assert intake.requests.tracked(keys[0]) == ["9-0"]
    assert intake.requests.tracked(keys[1]) == []
    assert intake.requests.tracked(keys[-1]) == [f"9-{count - 1}"]
    assert json.loads(intake.client.get(intake.keys.batch("payment:t1:b1"))) == {
        "key": "payment:t1:b1"
    }
    assert intake.inflight_batches(JOB) == ["payment:t1:b1"]
