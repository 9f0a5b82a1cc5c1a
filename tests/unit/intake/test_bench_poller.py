"""bench.e2e's poller reads Redis cheaply: one XLEN per poll while entries wait in the stream,
then each request's outcome once, pipelined (it used to send 72-118 HGETALL per message, more
commands than the pipeline it measured, issue 18)."""

from __future__ import annotations

import pytest

from bench.e2e import PIPELINE_TENANT, SettledPoller, envelopes
from queue_pipelines.intake.request_records import Outcome
from tests.support.memory_intake import MemoryIntake


class Counted:
    """The poller's Redis commands, counted on the client it uses; and, at each HGETALL, how
    many entries were still in the stream."""

    def __init__(self, intake: MemoryIntake, monkeypatch: pytest.MonkeyPatch):
        self.xlen = 0
        self.hgetall_with_entries_waiting: list[int] = []
        client = intake.client
        stream_length, new_pipeline = client.xlen, client.pipeline

        def xlen(name):
            self.xlen += 1
            return stream_length(name)

        def pipeline(*args, **kwargs):
            pipe = new_pipeline(*args, **kwargs)
            queue_hgetall = pipe.hgetall

            def hgetall(name):
                waiting = stream_length(intake.stream_key("payment"))
                self.hgetall_with_entries_waiting.append(waiting)
                return queue_hgetall(name)

            pipe.hgetall = hgetall
            return pipe

        monkeypatch.setattr(client, "xlen", xlen)
        monkeypatch.setattr(client, "pipeline", pipeline)


class Runs:
    """What the pipeline does as the poller sleeps: each sleep, the next requests settle as a
    run settles them (outcome first, then the entry leaves the stream)."""

    def __init__(self, intake: MemoryIntake, requests: list[tuple[str, str]], per_sleep: int):
        self.intake = intake
        self.waiting = list(requests)
        self.per_sleep = per_sleep
        self.sleeps = 0
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        for request_key, entry_id in self.waiting[: self.per_sleep]:
            self.intake.requests.record_outcome(request_key, Outcome("succeeded", run_id="r1"))
            self.intake.delete_entry("payment", entry_id)
        del self.waiting[: self.per_sleep]

    def clock(self) -> float:
        return self.now


def enqueued(intake: MemoryIntake, count: int) -> list[tuple[str, str]]:
    items = envelopes(PIPELINE_TENANT, count, "example.com")
    entry_ids = intake.enqueue_many(items)
    return [(item.request_key, entry_id) for item, entry_id in zip(items, entry_ids, strict=True)]


def test_each_outcome_is_read_once_and_only_once_the_stream_is_empty(intake, monkeypatch):
    requests = enqueued(intake, 7)
    runs = Runs(intake, requests, per_sleep=2)
    counted = Counted(intake, monkeypatch)
    poller = SettledPoller(intake, sleep=runs.sleep, clock=runs.clock)

    found = poller.wait([key for key, _ in requests], timeout=60)

    assert sorted(found) == sorted(key for key, _ in requests)
    assert {outcome["status"] for outcome in found.values()} == {"succeeded"}
    assert all(outcome["at"] and outcome["run_id"] == "r1" for outcome in found.values())
    assert runs.sleeps == 4  # 7 requests, 2 a sleep
    assert counted.xlen == runs.sleeps + 1  # one a poll
    assert counted.hgetall_with_entries_waiting == [0] * 7  # each once, at the end
    assert poller.commands == counted.xlen + 7


def test_at_the_timeout_it_reads_what_settled_and_leaves_out_the_rest(intake, monkeypatch):
    requests = enqueued(intake, 5)
    never = requests.pop()  # no run ever settles it
    runs = Runs(intake, requests, per_sleep=4)
    counted = Counted(intake, monkeypatch)
    poller = SettledPoller(intake, interval=1.0, sleep=runs.sleep, clock=runs.clock)

    found = poller.wait([key for key, _ in [*requests, never]], timeout=10)

    assert sorted(found) == sorted(key for key, _ in requests)
    assert never[0] not in found
    assert runs.sleeps == 10  # polled until the deadline
    assert counted.xlen == 11
    # while the unsettled entry waits, no outcome is read; at the deadline each one once
    assert counted.hgetall_with_entries_waiting == [1] * 5
