"""Working through one batch's requests (queue_pipelines.request_runner): each request retried alone
with backoff while its failure is transient, results in the items' order, `on_result` once
per request. Sleeping is injected and counted, never done."""

from __future__ import annotations

import threading

import pytest

from queue_pipelines.failures import PermanentError, TransientError
from queue_pipelines.request_runner import (
    FAILED,
    SUCCEEDED,
    UNFINISHED,
    Backoff,
    Item,
    count_by_status,
    handle_one,
    process_items,
)

NO_JITTER = Backoff(attempts=4, first_delay=0.5, max_delay=8.0, jitter=0.0)


class Script:
    """A handler that raises the given errors in turn, then returns a summary."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, request):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"request": request}


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_a_request_that_succeeds_at_once_sleeps_never():
    sleeps = Sleeps()
    result = handle_one(Item("k1", "r1"), Script(), NO_JITTER, sleep=sleeps)

    assert (result.status, result.attempts, result.summary) == (SUCCEEDED, 1, {"request": "r1"})
    assert result.succeeded and result.error is None and sleeps == []


def test_transient_failures_are_retried_with_doubling_delays_until_it_succeeds():
    handler = Script(TransientError("503"), TransientError("503"))
    sleeps = Sleeps()

    result = handle_one(Item("k1", "r1"), handler, NO_JITTER, sleep=sleeps)

    assert (result.status, result.attempts, handler.calls) == (SUCCEEDED, 3, 3)
    assert sleeps == [0.5, 1.0]


def test_transient_failures_outlasting_the_attempts_leave_the_request_unfinished():
    last = TransientError("Stripe rate limit", code="rate_limit")
    handler = Script(TransientError("1"), TransientError("2"), TransientError("3"), last)
    sleeps = Sleeps()

    result = handle_one(Item("k1", "r1"), handler, NO_JITTER, sleep=sleeps)

    assert (result.status, result.attempts, handler.calls) == (UNFINISHED, 4, 4)
    assert (result.reason, result.code, result.error) == ("Stripe rate limit", "rate_limit", last)
    assert sleeps == [0.5, 1.0, 2.0]  # none after the last attempt


def test_a_permanent_failure_fails_at_once():
    handler = Script(PermanentError("card declined", code="card_declined"))
    sleeps = Sleeps()

    result = handle_one(Item("k1", "r1"), handler, NO_JITTER, sleep=sleeps)

    assert (result.status, result.attempts, result.reason, result.code) == (
        FAILED,
        1,
        "card declined",
        "card_declined",
    )
    assert handler.calls == 1 and sleeps == []


def test_a_bug_fails_at_once_it_will_not_fix_itself_on_retry():
    sleeps = Sleeps()
    result = handle_one(Item("k1", "r1"), Script(KeyError("amount")), NO_JITTER, sleep=sleeps)
    assert (result.status, result.attempts, result.code) == (FAILED, 1, "unexpected")
    assert result.reason == "unexpected KeyError: 'amount'" and sleeps == []


def test_a_transient_then_permanent_failure_stops_at_the_permanent_one():
    sleeps = Sleeps()
    handler = Script(ConnectionResetError("reset"), PermanentError("invalid"))
    result = handle_one(Item("k1", "r1"), handler, NO_JITTER, sleep=sleeps)
    assert (result.status, result.attempts, sleeps) == (FAILED, 2, [0.5])


def test_backoff_delays_double_up_to_the_cap():
    backoff = Backoff(first_delay=0.5, max_delay=3.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("attempt", [1, 3, 6])
def test_backoff_jitter_stays_within_its_bounds(attempt):
    backoff = Backoff(first_delay=0.5, max_delay=8.0, jitter=0.5)
    base = min(0.5 * 2 ** (attempt - 1), 8.0)
    delays = {backoff.delay(attempt) for _ in range(200)}
    assert all(base * 0.5 <= d <= base * 1.5 for d in delays)
    assert len(delays) > 1  # jittered, so requests that failed together spread out


IMMEDIATE = Backoff(attempts=3, first_delay=0.0, max_delay=0.0, jitter=0.0)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_each_request_is_handled_alone_and_results_keep_the_items_order(concurrency):
    failures = {"k1": [PermanentError("declined")], "k3": [TransientError("503")] * 5}

    def handle(request_key):
        if failures.get(request_key):
            raise failures[request_key].pop(0)
        return {"done": request_key}

    seen, progress = [], []
    items = [Item(f"k{i}", f"k{i}") for i in range(5)]

    results = process_items(
        items,
        handle,
        concurrency=concurrency,
        backoff=IMMEDIATE,
        on_result=seen.append,
        on_progress=lambda done, total: progress.append((done, total)),
    )

    assert [r.request_key for r in results] == ["k0", "k1", "k2", "k3", "k4"]
    assert [r.status for r in results] == [SUCCEEDED, FAILED, SUCCEEDED, UNFINISHED, SUCCEEDED]
    assert results[3].attempts == 3
    assert sorted(seen, key=lambda r: r.request_key) == results  # once per request
    assert sorted(progress) == [(n, 5) for n in range(1, 6)]
    assert count_by_status(results) == {SUCCEEDED: 3, FAILED: 1, UNFINISHED: 1}


def test_results_keep_the_items_order_when_they_end_in_reverse():
    items = [Item(f"k{i}", i) for i in range(4)]
    finished = [threading.Event() for _ in items]

    def handle(i):
        if i + 1 < len(items):  # each waits for the next one: the last ends first
            assert finished[i + 1].wait(timeout=30), "the requests did not run at once"
        return {"i": i}

    ended = []

    def on_result(result):
        ended.append(result.request_key)
        finished[int(result.request_key[1:])].set()

    results = process_items(
        items, handle, concurrency=len(items), backoff=IMMEDIATE, on_result=on_result
    )

    assert ended == ["k3", "k2", "k1", "k0"]
    assert [r.request_key for r in results] == ["k0", "k1", "k2", "k3"]
    assert [r.summary for r in results] == [{"i": i} for i in range(4)]


def test_requests_that_take_turns_run_one_after_another_in_order_beside_the_others():
    """One ticket's transfers (turn "m1") run in the items' order, each after the one before
    ended; another ticket's (m2) runs at the same time as them."""
    items = [Item("a", ("m1", "a")), Item("x", ("m2", "x")), Item("b", ("m1", "b"))]
    items.append(Item("c", ("m1", "c")))
    m2_started = threading.Event()
    log, log_lock = [], threading.Lock()

    def handle(request):
        turn, name = request
        with log_lock:
            log.append(("start", name))
        if name == "x":
            m2_started.set()
        if name == "a":  # the other turn runs while this one is still going
            assert m2_started.wait(timeout=30), "the other turn did not run at once"
        with log_lock:
            log.append(("end", name))
        return {"name": name}

    results = process_items(
        items, handle, concurrency=4, backoff=IMMEDIATE, turns_of=lambda request: [request[0]]
    )

    assert [r.request_key for r in results] == ["a", "x", "b", "c"]
    assert all(r.status == SUCCEEDED for r in results)
    m1 = [event for event in log if event[1] != "x"]
    assert m1 == [("start", "a"), ("end", "a"), ("start", "b"), ("end", "b"),
                  ("start", "c"), ("end", "c")]  # fmt: skip


@pytest.mark.parametrize("concurrency", [1, 4])
def test_an_unfinished_request_holds_back_those_after_it_in_its_turn_a_failed_one_does_not(
    concurrency,
):
    failures = {"a": [TransientError("503")] * 5, "p": [PermanentError("owner_mismatch")]}
    calls = []

    def handle(request):
        turn, name = request
        calls.append(name)
        if failures.get(name):
            raise failures[name].pop(0)
        return {"name": name}

    items = [
        Item(name, (turn, name))
        for turn, name in [("m1", "a"), ("m1", "b"), ("m2", "p"), ("m1", "c"), ("m2", "q")]
    ]
    seen = []

    results = process_items(
        items,
        handle,
        concurrency=concurrency,
        backoff=IMMEDIATE,
        on_result=seen.append,
        turns_of=lambda request: [request[0]],
    )

    by_key = {r.request_key: r for r in results}
    assert [r.request_key for r in results] == ["a", "b", "p", "c", "q"]
    assert (by_key["a"].status, by_key["a"].attempts) == (UNFINISHED, 3)
    for held in ("b", "c"):  # untried: they must not overtake "a" in a later run either
        assert (by_key[held].status, by_key[held].attempts) == (UNFINISHED, 0)
        assert by_key[held].code == "waiting_turn"
        assert "waits for its turn after a, which did not finish (503)" in by_key[held].reason
    assert (by_key["p"].status, by_key["q"].status) == (FAILED, SUCCEEDED)
    assert sorted(calls) == ["a", "a", "a", "p", "q"]
    assert len(seen) == 5


def test_no_items_no_calls():
    calls = []
    assert process_items([], calls.append, concurrency=8, backoff=IMMEDIATE) == []
    assert calls == []


def test_waiting_for_a_provider_that_is_down_spends_no_attempt():
    down = TransientError("stripe looks down", code="circuit_open", retry_after=30.0)
    handler = Script(down, down, TransientError("503"))
    sleeps = Sleeps()

    result = handle_one(Item("k1", "r1"), handler, NO_JITTER, sleep=sleeps)

    assert (result.status, result.attempts, handler.calls) == (SUCCEEDED, 2, 4)
    assert sleeps == [30.0, 30.0, 0.5]


def test_a_provider_down_longer_than_the_wait_limit_leaves_the_request_unfinished():
    down = TransientError("stripe looks down", code="circuit_open", retry_after=100.0)
    handler = Script(*[down] * 10)
    sleeps = Sleeps()

    result = handle_one(Item("k1", "r1"), handler, NO_JITTER, sleep=sleeps)

    # 300 s of waiting for the provider, then the attempts' own backoff, then unfinished.
    assert (result.status, result.code, handler.calls) == (UNFINISHED, "circuit_open", 7)
    assert sleeps == [100.0, 100.0, 100.0, 0.5, 1.0, 2.0]


def test_a_runs_concurrency_comes_from_its_environment_or_the_registry(monkeypatch):
    from queue_pipelines.intake.registry import SPECS, run_concurrency

    assert run_concurrency("mint") == SPECS["mint"].concurrency == 4
    monkeypatch.setenv("QP_CONCURRENCY_PAYMENT", "16")
    assert run_concurrency("payment") == 16
    monkeypatch.setenv("QP_CONCURRENCY_PAYMENT", "0")
    with pytest.raises(ValueError, match="QP_CONCURRENCY_PAYMENT must be 1 or more"):
        run_concurrency("payment")
