"""The effect ledger's state machine on SQLite in a temporary directory (a file, no server):
claim, record, replay, resume, in-flight refusal, release."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from queue_pipelines.failures import TransientError
from queue_pipelines.ledger import DONE, PENDING, EffectInFlight, EffectLedger

KEY = "payment:t1:k1"


@pytest.fixture
def sqlite_ledger(tmp_path) -> Iterator[EffectLedger]:
    ledger = EffectLedger(f"sqlite:///{tmp_path}/nested/ledger.db")
    yield ledger
    ledger.dispose()


def live(*run_ids: str):
    return lambda run_id: run_id in run_ids


def test_a_fresh_claim_is_pending_at_attempt_one(sqlite_ledger):
    claim = sqlite_ledger.claim(KEY, "payment", "run-1")

    assert (claim.status, claim.attempts, claim.done, claim.resumed) == (PENDING, 1, False, False)
    assert claim.result is None and claim.created_at.tzinfo is not None
    row = sqlite_ledger.get(KEY)
    assert (row["kind"], row["run_id"], row["status"]) == ("payment", "run-1", PENDING)


def test_a_claim_of_a_done_key_replays_its_result_and_claims_nothing(sqlite_ledger):
    sqlite_ledger.claim(KEY, "payment", "run-1")
    sqlite_ledger.record(KEY, {"payment_intent_id": "pi_1", "amount": 2500})

    replay = sqlite_ledger.claim(KEY, "payment", "run-2", live("run-1", "run-2"))

    assert replay.done and replay.status == DONE
    assert replay.result == {"payment_intent_id": "pi_1", "amount": 2500}
    assert replay.attempts == 1 and sqlite_ledger.get(KEY)["run_id"] == "run-1"


def test_a_pending_claim_of_a_live_other_run_is_in_flight_and_transient(sqlite_ledger):
    sqlite_ledger.claim(KEY, "payment", "run-1")

    with pytest.raises(EffectInFlight) as caught:
        sqlite_ledger.claim(KEY, "payment", "run-2", live("run-1"))

    assert isinstance(caught.value, TransientError) and caught.value.code == "in_flight"
    assert caught.value.run_id == "run-1" and "run-1" in caught.value.reason
    row = sqlite_ledger.get(KEY)
    assert (row["run_id"], row["attempts"]) == ("run-1", 1)  # untouched


def test_a_pending_claim_of_a_dead_run_is_resumed_and_counted(sqlite_ledger):
    first = sqlite_ledger.claim(KEY, "payment", "run-1")

    resumed = sqlite_ledger.claim(KEY, "payment", "run-2", live("run-2"))

    assert (resumed.status, resumed.attempts, resumed.resumed) == (PENDING, 2, True)
    assert resumed.created_at == first.created_at  # the first claim's time: the window's start
    assert sqlite_ledger.get(KEY)["run_id"] == "run-2"


def test_the_same_run_claiming_again_resumes_its_own_claim(sqlite_ledger):
    sqlite_ledger.claim(KEY, "payment", "run-1")

    again = sqlite_ledger.claim(KEY, "payment", "run-1", live("run-1"))  # an op retry in run-1

    assert again.resumed and again.attempts == 2


def test_release_forgets_a_pending_claim_so_the_next_starts_afresh(sqlite_ledger):
    sqlite_ledger.claim(KEY, "payment", "run-1")
    sqlite_ledger.release(KEY)

    assert sqlite_ledger.get(KEY) is None
    fresh = sqlite_ledger.claim(KEY, "payment", "run-2")
    assert (fresh.attempts, fresh.resumed) == (1, False)


def test_release_leaves_a_done_effect_alone(sqlite_ledger):
    sqlite_ledger.claim(KEY, "payment", "run-1")
    sqlite_ledger.record(KEY, {"payment_intent_id": "pi_1"})

    sqlite_ledger.release(KEY)

    assert sqlite_ledger.get(KEY)["status"] == DONE


def test_keys_are_independent_and_counted_by_kind_and_status(sqlite_ledger):
    sqlite_ledger.claim("payment:t1:a", "payment", "run-1")
    sqlite_ledger.claim("payment:t1:b", "payment", "run-1")
    sqlite_ledger.claim("refund:t1:a", "refund", "run-1")
    sqlite_ledger.record("payment:t1:b", {})

    assert sqlite_ledger.count() == 3
    assert sqlite_ledger.count(kind="payment") == 2
    assert sqlite_ledger.count(kind="payment", status=DONE) == 1
    assert sqlite_ledger.count(status=PENDING) == 2


def test_the_ledger_keeps_its_state_across_instances_on_the_same_file(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db"
    first = EffectLedger(url)
    first.claim(KEY, "payment", "run-1")
    first.record(KEY, {"payment_intent_id": "pi_1"})
    first.dispose()

    second = EffectLedger(url)
    try:
        assert second.claim(KEY, "payment", "run-2").result == {"payment_intent_id": "pi_1"}
    finally:
        second.dispose()


def test_reads_do_not_wait_for_a_writer(tmp_path):
    """Another worker holds SQLite's write lock (a claim under way): a lookup still answers,
    from the last commit, instead of queueing behind it (or failing once its wait ran out)."""
    writer = EffectLedger(f"sqlite:///{tmp_path}/ledger.db")
    writer.claim(KEY, "payment", "run-1")
    writer.record(KEY, {"payment_intent_id": "pi_1"})
    reader = EffectLedger(f"sqlite:///{tmp_path}/ledger.db")
    try:
        with writer.engine.begin() as conn:  # BEGIN IMMEDIATE: the write lock, held
            conn.execute(sa.text("SELECT 1"))
            assert reader.result_of(KEY) == {"payment_intent_id": "pi_1"}
            assert reader.count("payment", DONE) == 1
    finally:
        reader.dispose()
        writer.dispose()
