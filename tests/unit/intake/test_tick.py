"""run_intake_tick, branch by branch, on IntakeStreams over an in-memory Redis
(tests/support/memory_intake.py) and a dict of runs: what a tick launches, acks,
dead-letters, holds and waits on, and what it leaves for the next tick."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from queue_pipelines.intake.batches import Batch, BatchPolicy
from queue_pipelines.intake.dispatch import (
    TickCursor,
    TickOutcome,
    entry_before,
    run_intake_tick,
    run_intake_ticks,
)
from queue_pipelines.intake.entries import entry_id_key
from queue_pipelines.intake.inflight import Assignment
from queue_pipelines.intake.request_records import SUCCEEDED, Outcome
from queue_pipelines.intake.settling import BatchRun, RunState
from tests.support.envelopes import notification, payment
from tests.support.memory_intake import MemoryIntake, commands_sent, memory_intake

JOB = "payment"


class Sensor:
    """What the Dagster sensor keeps between ticks (its cursor), and the runs that exist,
    by batch key: a tick's state, with the clock on the intake."""

    def __init__(self, streams: MemoryIntake, policy: BatchPolicy, max_entries: int = 1000):
        self.streams = streams
        self.policy = policy
        self.max_entries = max_entries
        self.cursor = TickCursor()
        self.runs: dict[str, BatchRun] = {}
        self.lookups: list[list[str]] = []

    def lookup(self, batch_keys: Sequence[str]) -> Mapping[str, BatchRun]:
        self.lookups.append(list(batch_keys))
        return {key: self.runs[key] for key in batch_keys if key in self.runs}

    def tick(self, *, reclaim_after: float = 60.0) -> TickOutcome:
        outcome = run_intake_tick(
            self.streams,
            JOB,
            self.cursor,
            self.lookup,
            policy=self.policy,
            max_entries=self.max_entries,
            reclaim_after_seconds=reclaim_after,
            now=self.streams.clock,
        )
        self.cursor = outcome.cursor  # kept: the tick succeeded
        return outcome

    def start(self, batch: Batch) -> str:
        run_id = f"run-{len(self.runs) + 1}"
        self.runs[batch.key] = BatchRun(RunState.IN_PROGRESS, run_id)
        return run_id

    def end(self, batch: Batch, failure: str = "", started: bool = True) -> None:
        run_id = self.runs[batch.key].run_id
        self.runs[batch.key] = BatchRun(RunState.ENDED, run_id, failure, started)


@pytest.fixture
def streams(monkeypatch) -> MemoryIntake:
    return memory_intake(monkeypatch)


def sensor(streams, size=100, max_wait=0.0, max_attempts=3, **kw) -> Sensor:
    return Sensor(streams, BatchPolicy(size, max_wait, max_attempts), **kw)


def keys_of(batch: Batch) -> list[str]:
    return [item.request_key for item in batch.items]


# invalid entries


def test_an_invalid_entry_is_dead_lettered_with_the_reason_and_the_rest_are_batched(streams):
    good = streams.enqueue(payment("t1", "k1"))
    no_envelope = streams.add_raw(JOB, {"body": "{}"})
    bad_json = streams.add_raw(JOB, {"envelope": "{not json"})
    wrong_stream = streams.add_raw(JOB, {"envelope": notification("t1", "n1").to_wire()})
    s = sensor(streams)

    outcome = s.tick()

    [batch] = outcome.launches
    assert keys_of(batch) == ["payment:t1:k1"]
    assert [what for what, _ in outcome.dead_lettered] == [no_envelope, bad_json, wrong_stream]
    letters = {letter["entry_id"]: letter for letter in streams.dead_letters()}
    assert (
        letters[no_envelope]["reason"] == "rejected: entry has no 'envelope' field (fields: body)"
    )
    assert letters[no_envelope]["fields"] == {"body": "{}"}
    assert letters[bad_json]["reason"].startswith("rejected: invalid JSON")
    assert letters[wrong_stream]["reason"] == (
        "rejected: job type 'notification' does not belong on the payment stream"
    )
    assert streams.stream_ids(JOB) == streams.pending_ids(JOB) == [good]
    assert outcome.cursor.last_id == wrong_stream


# new requests


def test_new_requests_are_batched_per_tenant_never_mixing_tenants(streams):
    for i in range(3):
        streams.enqueue(payment("ta", f"a{i}"))
        streams.enqueue(payment("tb", f"b{i}"))
    s = sensor(streams)

    outcome = s.tick()

    assert sorted((b.tenant_id, len(b.items)) for b in outcome.launches) == [("ta", 3), ("tb", 3)]
    for batch in outcome.launches:
        assert {key.split(":")[1] for key in keys_of(batch)} == {batch.tenant_id}
        assert batch.key.startswith(f"payment:{batch.tenant_id}:")
        # recorded before its run is requested, each request assigned to it at attempt 1
        assert streams.batch(batch.key) == batch.to_json()
        assert streams.assignments(keys_of(batch)) == {
            k: Assignment(batch.key, 1) for k in keys_of(batch)
        }
    assert streams.inflight_batches(JOB) == sorted(b.key for b in outcome.launches)
    # nothing is acked before a run settles it
    assert len(streams.pending_ids(JOB)) == 6 and outcome.acked == 0


def test_a_batch_is_in_priority_order_then_oldest_first_and_batches_by_priority(streams):
    streams.enqueue(payment("ta", "low-old", priority=0))
    streams.advance(0.01)
    streams.enqueue(payment("ta", "high", priority=10))
    streams.advance(0.01)
    streams.enqueue(payment("ta", "low-young", priority=0))
    streams.enqueue(payment("tb", "urgent", priority=50))
    s = sensor(streams)

    outcome = s.tick()

    assert [b.tenant_id for b in outcome.launches] == ["tb", "ta"]  # the higher priority first
    assert keys_of(outcome.launches[1]) == [
        "payment:ta:high",
        "payment:ta:low-old",
        "payment:ta:low-young",
    ]
    assert outcome.launches[1].priority == 10


def test_a_batch_holds_at_most_size_requests(streams):
    for i in range(7):
        streams.enqueue(payment("ta", f"k{i}"))
    s = sensor(streams, size=3)

    outcome = s.tick()

    assert [len(b.items) for b in outcome.launches] == [3, 3, 1]
    launched = [k for b in outcome.launches for k in keys_of(b)]
    assert launched == [f"payment:ta:k{i}" for i in range(7)]


def test_a_partial_batch_is_held_while_young_and_read_again_until_it_fills(streams):
    first = streams.enqueue(payment("ta", "k1"))
    streams.enqueue(payment("ta", "k2"))
    s = sensor(streams, size=3, max_wait=5.0)

    held = s.tick()

    assert held.launches == [] and held.held == 2
    assert s.cursor.last_id == entry_before(first)  # moved back: the next tick reads them again
    assert entry_id_key(s.cursor.last_id) < entry_id_key(first)
    assert len(streams.pending_ids(JOB)) == 2 and streams.all_assignments() == {}

    streams.advance(1.0)
    streams.enqueue(payment("ta", "k3"))
    full = s.tick()

    [batch] = full.launches
    assert keys_of(batch) == ["payment:ta:k1", "payment:ta:k2", "payment:ta:k3"]
    assert full.held == 0


def test_a_held_partial_batch_is_launched_once_its_oldest_request_is_old_enough(streams):
    streams.enqueue(payment("ta", "k1"))
    s = sensor(streams, size=10, max_wait=5.0)
    assert s.tick().held == 1

    streams.advance(4.9)
    assert s.tick().launches == []

    streams.advance(0.2)
    outcome = s.tick()

    [batch] = outcome.launches
    assert keys_of(batch) == ["payment:ta:k1"] and outcome.held == 0
    # once launched, the cursor is past it: the next tick does not read it again
    s.start(batch)
    assert s.tick().launches == [] and s.cursor.last_id == streams.stream_ids(JOB)[0]


def quiet_sensor(streams, quiet=0.1, max_wait=5.0) -> Sensor:
    return Sensor(streams, BatchPolicy(size=10, max_wait_seconds=max_wait, quiet_seconds=quiet))


def test_an_idle_tenants_smaller_batch_goes_once_no_request_came_for_the_quiet_time(streams):
    first = streams.enqueue(payment("ta", "k1"))
    s = quiet_sensor(streams)
    held = s.tick()
    assert held.launches == [] and held.held == 1
    assert held.held_due == pytest.approx(entry_id_key(first)[0] / 1000 + 0.1)

    streams.advance(0.06)
    streams.enqueue(payment("ta", "k2"))  # the quiet time starts again
    streams.advance(0.06)
    assert s.tick().launches == []

    streams.advance(0.05)
    [batch] = s.tick().launches
    assert keys_of(batch) == ["payment:ta:k1", "payment:ta:k2"]


def test_a_tenant_with_a_batch_in_flight_gathers_for_the_whole_batch_wait(streams):
    streams.enqueue(payment("ta", "k1"))
    streams.enqueue(payment("tb", "k1"))
    s = quiet_sensor(streams)
    streams.advance(0.2)
    first = s.tick().launches
    assert sorted(b.tenant_id for b in first) == ["ta", "tb"]
    s.start(first[0])  # ta's run is working; tb's run is not created yet: both are busy

    streams.enqueue(payment("ta", "k2"))
    streams.enqueue(payment("tb", "k2"))
    streams.advance(4.9)
    waiting = s.tick()
    # tb's first batch is requested again (its run is not created yet); the new ones wait
    assert [keys_of(b) for b in waiting.launches] == [["payment:tb:k1"]]
    assert waiting.held == 2

    streams.advance(0.2)
    launched = [keys_of(b) for b in s.tick().launches]
    assert ["payment:ta:k2"] in launched and ["payment:tb:k2"] in launched


def test_the_cursor_moved_back_to_a_millisecond_boundary_still_reads_the_entry(streams):
    entry = streams.enqueue(payment("ta", "k1"))
    assert entry.endswith("-0")
    s = sensor(streams, size=2, max_wait=5.0)
    s.tick()
    assert s.cursor.last_id == f"{int(entry.split('-')[0]) - 1}-18446744073709551615"

    streams.advance(6)
    [batch] = s.tick().launches
    assert keys_of(batch) == ["payment:ta:k1"]


# duplicates and outcomes


def test_a_duplicate_of_an_in_flight_request_waits_tracked_and_launches_nothing(streams):
    first = streams.enqueue(payment("ta", "k1"))
    s = sensor(streams)
    [batch] = s.tick().launches
    s.start(batch)

    duplicate = streams.enqueue(payment("ta", "k1"))
    outcome = s.tick()

    assert outcome.launches == [] and outcome.waiting == 1
    assert streams.tracked("payment:ta:k1") == {first, duplicate}
    # the run's success settles both entries
    streams.request_succeeded(JOB, "payment:ta:k1", "run-1")
    assert streams.stream_ids(JOB) == [] and streams.pending_ids(JOB) == []


def test_two_entries_for_one_request_in_one_tick_make_one_batch_item(streams):
    first = streams.enqueue(payment("ta", "k1", amount=100))
    second = streams.enqueue(payment("ta", "k1", amount=100))
    s = sensor(streams)

    [batch] = s.tick().launches

    [item] = batch.items
    assert item.payload["amount"] == 100
    assert streams.tracked("payment:ta:k1") == {first, second}


def test_a_key_reused_for_a_different_payload_is_dead_lettered_not_batched(streams):
    first = streams.enqueue(payment("ta", "k1", amount=100))
    other = streams.enqueue(payment("ta", "k1", amount=999))
    s = sensor(streams)

    outcome = s.tick()

    [batch] = outcome.launches
    assert [item.payload["amount"] for item in batch.items] == [100]
    [(entry_id, reason)] = outcome.dead_lettered
    assert entry_id == other
    assert f"'k1' was first used for a different payment request (entry {first})" in reason
    assert streams.tracked("payment:ta:k1") == {first}


def test_a_late_duplicate_of_a_succeeded_request_is_acked_on_sight(streams):
    streams.request_succeeded(JOB, "payment:ta:k1", "run-9")
    duplicate = streams.enqueue(payment("ta", "k1"))
    s = sensor(streams)

    outcome = s.tick()

    assert outcome.launches == [] and outcome.acked == 1
    assert duplicate not in streams.stream_ids(JOB) and streams.pending_ids(JOB) == []
    assert streams.dead_letters() == []


def test_a_late_duplicate_of_a_failed_request_is_dead_lettered_with_the_runs_reason(streams):
    streams.request_failed(JOB, "payment:ta:k1", "card declined", "run-9")
    duplicate = streams.enqueue(payment("ta", "k1"))
    s = sensor(streams)

    outcome = s.tick()

    assert outcome.launches == [] and outcome.dead_lettered == [(duplicate, "card declined")]
    [letter] = streams.dead_letters()
    assert (letter["entry_id"], letter["reason"], letter["run_id"], letter["request_key"]) == (
        duplicate,
        "card declined",
        "run-9",
        "payment:ta:k1",
    )
    assert streams.stream_ids(JOB) == []


# ended batches: the settle rule


def test_an_ended_batch_settles_recorded_outcomes_and_batches_the_rest_again(streams):
    for key in ("ok", "bad", "lost"):
        streams.enqueue(payment("ta", key))
    s = sensor(streams)
    [batch] = s.tick().launches
    run_id = s.start(batch)
    # The run records two outcomes and crashes before the third.
    streams.request_succeeded(JOB, "payment:ta:ok", run_id)
    streams.request_failed(JOB, "payment:ta:bad", "card declined", run_id)
    s.end(batch, failure="run-1 failed: process killed")

    outcome = s.tick()

    [again] = outcome.launches
    assert again.key != batch.key
    assert [(i.request_key, i.attempt) for i in again.items] == [("payment:ta:lost", 2)]
    assert outcome.relaunched == 1
    assert streams.inflight_batches(JOB) == [again.key]
    assert streams.batch(batch.key) is None
    assert streams.all_assignments() == {"payment:ta:lost": Assignment(again.key, 2)}
    [lost] = streams.stream_ids(JOB)
    assert streams.tracked("payment:ta:lost") == {lost}
    assert [letter["request_key"] for letter in streams.dead_letters()] == ["payment:ta:bad"]


def test_a_request_is_dead_lettered_with_the_runs_failure_after_max_attempts(streams):
    entry = streams.enqueue(payment("ta", "k1"))
    s = sensor(streams, max_attempts=2)
    [first] = s.tick().launches
    s.start(first)
    s.end(first, failure="step charge_payments failed: OOM")
    [second] = s.tick().launches
    assert second.items[0].attempt == 2
    s.start(second)
    s.end(second, failure="step charge_payments failed: OOM")

    outcome = s.tick()

    reason = "step charge_payments failed: OOM; the request was not settled after 2 runs"
    assert outcome.launches == [] and outcome.dead_lettered == [("payment:ta:k1", reason)]
    [letter] = streams.dead_letters()
    assert (letter["entry_id"], letter["reason"], letter["run_id"]) == (entry, reason, "run-2")
    assert streams.outcomes(["payment:ta:k1"])["payment:ta:k1"].reason == reason
    assert streams.inflight_batches(JOB) == [] and streams.all_assignments() == {}
    # a later duplicate is dead-lettered on sight, with the same reason
    streams.enqueue(payment("ta", "k1"))
    assert s.tick().dead_lettered[0][1] == reason


def test_runs_that_never_started_a_step_count_no_attempt_until_their_own_bound(streams):
    entry = streams.enqueue(payment("ta", "k1"))
    s = sensor(streams, max_attempts=1)
    s.policy = BatchPolicy(100, 0.0, max_attempts=1, max_launch_failures=3)
    batch = s.tick().launches[0]
    for launch_failures in (1, 2):
        s.start(batch)
        s.end(batch, failure="run r failed: launch timed out", started=False)
        [batch] = s.tick().launches
        [item] = batch.items
        assert (item.attempt, item.launch_failures) == (1, launch_failures)
    s.start(batch)
    s.end(batch, failure="run r failed: launch timed out", started=False)

    outcome = s.tick()

    [(key, reason)] = outcome.dead_lettered
    assert key == "payment:ta:k1" and outcome.launches == []
    assert "3 runs of the request ended before any step started" in reason
    assert "nothing was done for it" in reason
    [letter] = streams.dead_letters()
    assert letter["entry_id"] == entry


def test_a_run_that_ended_without_a_failure_message_is_named_in_the_reason(streams):
    streams.enqueue(payment("ta", "k1"))
    s = sensor(streams, max_attempts=1)
    [batch] = s.tick().launches
    s.start(batch)
    s.end(batch)

    outcome = s.tick()

    assert outcome.dead_lettered == [
        ("payment:ta:k1", "run run-1 ended; the request was not settled after 1 runs")
    ]


def test_a_duplicate_read_while_its_request_is_batched_again_waits(streams):
    streams.enqueue(payment("ta", "k1"))
    s = sensor(streams)
    [batch] = s.tick().launches
    s.start(batch)
    s.end(batch)
    duplicate = streams.enqueue(payment("ta", "k1"))

    outcome = s.tick()

    [again] = outcome.launches
    assert [(i.request_key, i.attempt) for i in again.items] == [("payment:ta:k1", 2)]
    assert outcome.waiting == 1
    assert duplicate in streams.tracked("payment:ta:k1")


def test_a_request_batched_again_goes_at_once_though_its_batch_is_small(streams):
    streams.enqueue(payment("ta", "k1"))
    s = sensor(streams, size=10, max_wait=0.0)
    [batch] = s.tick().launches
    s.start(batch)
    s.end(batch)
    s.policy = BatchPolicy(size=10, max_wait_seconds=3600, max_attempts=3)

    [again] = s.tick().launches

    assert keys_of(again) == ["payment:ta:k1"]


def test_an_in_flight_batch_without_a_run_is_requested_again_under_the_same_key(streams):
    streams.enqueue(payment("ta", "k1"))
    s = sensor(streams)
    [batch] = s.tick().launches
    # the run request was lost (the tick's result never reached the daemon)

    outcome = s.tick()

    [same] = outcome.launches
    assert same.key == batch.key and same.to_json() == batch.to_json()
    assert streams.inflight_batches(JOB) == [batch.key]
    assert outcome.relaunched == 0


def test_a_batch_whose_run_is_in_progress_waits(streams):
    streams.enqueue(payment("ta", "k1"))
    s = sensor(streams)
    [batch] = s.tick().launches
    s.start(batch)

    outcome = s.tick()

    assert outcome.launches == [] and outcome.idle
    assert s.lookups[-1] == [batch.key]
    assert streams.inflight_batches(JOB) == [batch.key]
    assert streams.assignments(["payment:ta:k1"])["payment:ta:k1"].batch_key == batch.key


def test_a_batch_finished_by_a_tick_that_failed_later_is_forgotten(streams):
    streams.client.sadd(streams.keys.inflight(JOB), "payment:ta:gone")
    s = sensor(streams)

    outcome = s.tick()

    assert outcome.launches == [] and streams.inflight_batches(JOB) == []


def test_a_succeeded_batch_acks_what_was_tracked_after_its_run_settled(streams):
    streams.enqueue(payment("ta", "k1"))
    s = sensor(streams)
    [batch] = s.tick().launches
    run_id = s.start(batch)
    streams.request_succeeded(JOB, "payment:ta:k1", run_id)
    # a duplicate read while the run was finishing, tracked after its settle
    late = streams.add_raw(JOB, {"envelope": payment("ta", "k1").to_wire()})
    streams.track(JOB, "payment:ta:k1", [late])
    s.end(batch)

    outcome = s.tick()

    assert outcome.launches == []
    assert streams.stream_ids(JOB) == [] and streams.pending_ids(JOB) == []
    assert streams.all_assignments() == {} and streams.inflight_batches(JOB) == []


# reading


def test_entries_left_pending_by_a_failed_tick_are_read_again_from_the_unchanged_cursor(
    streams, monkeypatch
):
    streams.enqueue(payment("ta", "k1"))
    s = sensor(streams)

    class TickFailed(Exception):
        pass

    def broken(*_args, **_kwargs):
        raise TickFailed

    with monkeypatch.context() as patch:
        patch.setattr(streams, "assign_batch", broken)
        with pytest.raises(TickFailed):
            s.tick()
    assert s.cursor == TickCursor()  # the sensor keeps a cursor only from a tick that succeeded

    [batch] = s.tick().launches

    assert keys_of(batch) == ["payment:ta:k1"]


def test_a_tick_reads_at_most_max_entries_and_the_next_tick_goes_on(streams):
    for i in range(5):
        streams.enqueue(payment("ta", f"k{i}"))
    s = sensor(streams, max_entries=2)

    batches = []
    for _ in range(3):
        batches.append(s.tick().launches)
        for batch in batches[-1]:
            s.start(batch)

    assert [[keys_of(b) for b in launched] for launched in batches] == [
        [["payment:ta:k0", "payment:ta:k1"]],
        [["payment:ta:k2", "payment:ta:k3"]],
        [["payment:ta:k4"]],
    ]


def test_an_entry_stale_in_the_pending_list_is_reclaimed_and_batched(streams):
    streams.enqueue(payment("ta", "k1"))
    s = sensor(streams)
    # Delivered by a tick whose cursor was lost: pending, and behind the cursor.
    streams.read(JOB, ">", 10)
    s.cursor = TickCursor(last_id=streams.stream_ids(JOB)[-1])
    streams.advance(30)
    assert s.tick(reclaim_after=60).launches == []

    streams.advance(31)
    [batch] = s.tick(reclaim_after=60).launches

    assert keys_of(batch) == ["payment:ta:k1"]


# one evaluation: ticks while it waits (the daemon starts one at most every 5 s)


def evaluate(s: Sensor, listen: float = 3.0, arrivals: Sequence = ()) -> TickOutcome:
    """run_intake_ticks on the in-memory intake: sleeping moves its clock; a wait for new
    entries delivers the next of `arrivals` (enqueued as it returns), or times out."""
    streams, pending = s.streams, list(arrivals)

    def sleep(seconds: float) -> None:
        s.sleeps.append(seconds)
        streams.clock += seconds

    def wait_for_new(job_type: str, timeout: float) -> bool:
        if pending:
            streams.clock += 0.2
            streams.enqueue(pending.pop(0))
        return MemoryIntake.wait_for_new(streams, job_type, timeout)

    s.sleeps = []
    streams.wait_for_new = wait_for_new
    outcome = run_intake_ticks(
        streams,
        JOB,
        s.cursor,
        s.lookup,
        policy=s.policy,
        max_entries=s.max_entries,
        reclaim_after_seconds=60.0,
        listen_seconds=listen,
        clock=lambda: streams.clock,
        sleep=sleep,
    )
    s.cursor = outcome.cursor
    return outcome


def test_a_held_batch_is_launched_in_the_same_evaluation_once_it_is_due(streams):
    streams.enqueue(payment("t1", "k1"))
    s = sensor(streams, size=10, max_wait=0.5)

    outcome = evaluate(s)

    [batch] = outcome.launches
    assert keys_of(batch) == ["payment:t1:k1"]
    assert len(s.sleeps) == 1 and 0.5 <= s.sleeps[0] < 0.6  # until due, not until next tick
    assert outcome.held == 0 and outcome.held_due is None


def test_a_lone_request_on_an_idle_stack_waits_the_quiet_time_not_the_batch_wait(streams):
    streams.enqueue(payment("t1", "k1"))
    s = quiet_sensor(streams, quiet=0.1, max_wait=0.5)

    [batch] = evaluate(s).launches

    assert keys_of(batch) == ["payment:t1:k1"]
    assert len(s.sleeps) == 1 and 0.1 <= s.sleeps[0] < 0.15


def test_an_idle_evaluation_listens_for_a_new_request_and_batches_it(streams):
    s = sensor(streams, size=10, max_wait=0.0)

    outcome = evaluate(s, arrivals=[payment("t1", "late")])

    [batch] = outcome.launches
    assert keys_of(batch) == ["payment:t1:late"]
    assert streams.calls.count("wait_for_new") == 1
    assert streams.stream_ids(JOB) == streams.pending_ids(JOB)  # delivered by the read


def test_an_idle_evaluation_ends_when_its_listening_time_is_up(streams):
    s = sensor(streams)
    started = streams.clock

    outcome = evaluate(s, listen=3.0)

    assert outcome.idle and outcome.launches == []
    assert streams.calls.count("read") == 1
    assert streams.clock == pytest.approx(started + 3.0)


def test_an_evaluation_returns_as_soon_as_it_has_a_run_to_request(streams):
    streams.enqueue(payment("t1", "k1"))
    s = sensor(streams, size=10, max_wait=0.0)

    outcome = evaluate(s, arrivals=[payment("t1", "never-waited-for")])

    assert [keys_of(b) for b in outcome.launches] == [["payment:t1:k1"]]
    assert "wait_for_new" not in streams.calls


def test_a_burst_still_arriving_after_a_full_batch_joins_the_same_evaluation(streams):
    """A tick that filled a batch is reading a burst: what came meanwhile is ticked at once,
    not left to the next evaluation (5 s later); a tick with no full batch returns (above)."""
    streams.enqueue_many([payment("t1", "k1"), payment("t1", "k2")])
    s = sensor(streams, size=2, max_wait=0.0)

    outcome = evaluate(s, arrivals=[payment("t1", "k3")])

    assert [keys_of(b) for b in outcome.launches] == [
        ["payment:t1:k1", "payment:t1:k2"],
        ["payment:t1:k3"],
    ]
    assert streams.calls.count("wait_for_new") == 1  # the second batch is not full: no more


def test_a_ticks_round_trips_to_redis_do_not_grow_with_its_requests(streams, monkeypatch):
    """Recording and tracking the requests a tick reads, and settling a batch whose run
    ended, are pipelined: a tick over 40 requests sends Redis as many round trips as one
    over 4 (each was a round trip per request, twice over, and twice per settled request)."""
    s = sensor(streams)
    sent = commands_sent(streams, monkeypatch)
    trips = {}
    for count in (1, 4, 40):  # the first also loads the scripts into Redis
        for i in range(count):
            streams.enqueue(payment(f"t{count}", f"k{i}"))
        del sent[:]
        [batch] = s.tick().launches
        batching = len(sent)
        run_id = s.start(batch)
        for item in batch.items:  # recorded, and the run ended before it acked them
            streams.requests.record_outcome(item.request_key, Outcome(SUCCEEDED, run_id=run_id))
        s.end(batch)
        del sent[:]
        assert s.tick().acked == count
        trips[count] = (batching, len(sent))

    assert trips[40] == trips[4]
    assert streams.stream_ids(JOB) == [] and streams.inflight_batches(JOB) == []
