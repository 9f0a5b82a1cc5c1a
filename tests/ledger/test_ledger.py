"""The effect ledger on SQLite and PostgreSQL, including claims racing from many processes."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from queue_pipelines.ledger import EffectInFlight, EffectLedger


@pytest.fixture(params=["sqlite", "postgresql"])
def any_ledger(request, tmp_path, postgres_url) -> EffectLedger:
    url = f"sqlite:///{tmp_path}/ledger.db" if request.param == "sqlite" else postgres_url
    ledger = EffectLedger(url)
    yield ledger
    ledger.dispose()


def test_claim_record_and_replay(any_ledger):
    key = f"payment:t:{uuid.uuid4()}"
    first = any_ledger.claim(key, "payment", "run-1")
    assert (first.status, first.attempts, first.resumed) == ("pending", 1, False)

    retry = any_ledger.claim(key, "payment", "run-1")
    assert retry.resumed and retry.attempts == 2

    any_ledger.record(key, {"payment_intent_id": "pi_1"})
    replay = any_ledger.claim(key, "payment", "run-2")
    assert replay.done and replay.result == {"payment_intent_id": "pi_1"}
    assert replay.attempts == 2  # a done key is not claimed again


def test_release_forgets_only_a_pending_claim(any_ledger):
    key = f"refund:t:{uuid.uuid4()}"
    any_ledger.claim(key, "refund", "run-1")
    any_ledger.release(key)
    assert any_ledger.get(key) is None

    any_ledger.claim(key, "refund", "run-2")
    any_ledger.record(key, {"refund_id": "re_1"})
    any_ledger.release(key)
    assert any_ledger.get(key)["status"] == "done"


def _always_live(_run_id: str) -> bool:
    return True


def _claim_in_process(url: str, key: str, run_id: str, queue) -> None:
    ledger = EffectLedger(url)
    try:
        claim = ledger.claim(key, "payment", run_id, _always_live)
        queue.put(("claimed", claim.attempts))
    except EffectInFlight as exc:
        queue.put(("in flight", exc.run_id))
    finally:
        ledger.dispose()


def test_concurrent_claims_from_live_runs_let_exactly_one_act(any_ledger):
    key = f"payment:t:{uuid.uuid4()}"
    url = str(any_ledger.engine.url.render_as_string(hide_password=False))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    racers = [
        context.Process(target=_claim_in_process, args=(url, key, f"run-{i}", queue))
        for i in range(6)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
    outcomes = [queue.get(timeout=5) for _ in racers]

    winners = [o for o in outcomes if o[0] == "claimed"]
    assert winners == [("claimed", 1)]
    owner = any_ledger.get(key)["run_id"]
    assert sorted(o for o in outcomes if o[0] == "in flight") == [("in flight", owner)] * 5


def test_claim_of_a_finished_run_is_taken_over_and_counted(any_ledger):
    key = f"payment:t:{uuid.uuid4()}"
    any_ledger.claim(key, "payment", "crashed-run")

    with pytest.raises(EffectInFlight):
        any_ledger.claim(key, "payment", "second-run", run_is_live=lambda run_id: True)
    taken = any_ledger.claim(key, "payment", "second-run", run_is_live=lambda run_id: False)

    assert taken.resumed and taken.attempts == 2
    assert any_ledger.get(key)["run_id"] == "second-run"


def test_an_index_row_is_written_with_the_record_and_find_done_matches_exactly(any_ledger):
    run = uuid.uuid4().hex
    key, other = f"mint:t_{run}:a", f"mint:t{run[:1]}{run}:b"
    any_ledger.claim(key, "mint", "run-1")
    any_ledger.record(
        key, {"mint": "M1"}, index=(f"mint-address:M1-{run}", "mint-address", {"t": 1})
    )
    # A second record of the same index (a replayed mint) keeps the first row.
    any_ledger.record(
        key, {"mint": "M1"}, index=(f"mint-address:M1-{run}", "mint-address", {"t": 2})
    )
    any_ledger.claim(other, "mint", "run-1")
    any_ledger.record(other, {"mint": "M1"})

    indexed = any_ledger.get(f"mint-address:M1-{run}")
    assert (indexed["status"], indexed["kind"], indexed["run_id"]) == (
        "done",
        "mint-address",
        "run-1",
    )
    assert indexed["result"] == '{"t": 1}'
    assert [
        r["effect_key"] for r in any_ledger.find_done("mint", f"mint:t_{run}:", "mint", "M1")
    ] == [key]
    # `_` in the prefix is no wildcard: `t_` does not match `tX` of the other key.
    assert [
        r["effect_key"]
        for r in any_ledger.find_done("mint", f"mint:t{run[:1]}{run}:", "mint", "M1")
    ] == [other]
    assert any_ledger.find_done("mint", f"mint:t_{run}:", "mint", "M") == []  # no substring


def test_notes_stay_with_a_pending_claim_for_the_attempt_that_resumes_it(any_ledger):
    key = f"payment:t:{uuid.uuid4().hex}"
    any_ledger.claim(key, "payment", "run-1")
    any_ledger.note(key, "customers", "cus_A")
    any_ledger.note(key, "customers", "cus_A")  # noted twice (a retry): kept once
    any_ledger.note(key, "customers", "cus_B")

    resumed = any_ledger.claim(key, "payment", "run-2")
    assert resumed.resumed and resumed.result is None
    assert resumed.notes == {"customers": ["cus_A", "cus_B"]}

    any_ledger.record(key, {"payment_intent_id": "pi_1"})
    any_ledger.note(key, "customers", "cus_C")  # recorded: nothing is in doubt any more
    done = any_ledger.claim(key, "payment", "run-3")
    assert (done.result, done.notes) == ({"payment_intent_id": "pi_1"}, {})
    any_ledger.note(f"{key}-never-claimed", "customers", "cus_D")
    assert any_ledger.get(f"{key}-never-claimed") is None


def test_concurrent_claims_from_threads_of_one_process_let_exactly_one_act(any_ledger):
    """A run worker's threads: on SQLite their claims share transactions (GroupCommit), and
    a claim that finds the key taken by another live run in the same transaction is refused
    there, as across transactions."""
    key = f"payment:t:{uuid.uuid4()}"
    start = threading.Barrier(16)

    def claim(i: int) -> tuple[str, object]:
        start.wait()
        try:
            return ("claimed", any_ledger.claim(key, "payment", f"run-{i}", _always_live).attempts)
        except EffectInFlight as exc:
            return ("in flight", exc.run_id)

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(claim, range(16)))

    assert [o for o in outcomes if o[0] == "claimed"] == [("claimed", 1)]
    owner = any_ledger.get(key)["run_id"]
    assert sorted(o for o in outcomes if o[0] == "in flight") == [("in flight", owner)] * 15
