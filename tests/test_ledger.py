"""The effect ledger on SQLite and PostgreSQL, including claims racing from many processes."""

from __future__ import annotations

import multiprocessing
import uuid

import pytest

from queue_pipelines.ledger import EffectLedger


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


def _claim_in_process(url: str, key: str, queue) -> None:
    ledger = EffectLedger(url)
    queue.put(ledger.claim(key, "payment", "racer").attempts)
    ledger.dispose()


def test_concurrent_claims_from_many_processes_count_every_attempt(any_ledger):
    key = f"payment:t:{uuid.uuid4()}"
    url = str(any_ledger.engine.url.render_as_string(hide_password=False))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    racers = [context.Process(target=_claim_in_process, args=(url, key, queue)) for _ in range(6)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
    attempts = sorted(queue.get(timeout=5) for _ in racers)
    # Exactly one process saw a fresh claim; the others saw an earlier attempt.
    assert attempts == [1, 2, 3, 4, 5, 6]
