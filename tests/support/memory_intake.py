"""The unit tier's intake: IntakeStreams itself, on an in-memory Redis (fakeredis, which runs
the intake's Lua scripts with lupa), so the unit tests run the production code, keys and
scripts with nothing to start and no socket opened. It subclasses what it stands in for, as
dramatiq's StubBroker does, and cannot drift from it the way a hand-written copy of Redis
Streams did (tests/support/stub_intake.py, until #19).

What a unit test adds:

- a clock it moves (`clock`, `advance`): Redis makes entry ids and idle times from its own
  clock, and so does fakeredis, from `time.time`, which `memory_intake` points at this clock;
- `wait_for_new` without real waiting: nothing arrives while a unit test waits, so an entry
  not yet delivered answers at once, and otherwise the clock moves by the timeout;
- looks at the streams, pending lists and bookkeeping through the intake's own keys, and
  `calls`, the sensor-facing reads made, in order.

The integration tier runs the same code on real Redis 6.2 and 7, whose replies differ in
corner cases that fakeredis does not copy (a pending entry deleted from its stream).
"""

from __future__ import annotations

import time

import fakeredis
import pytest
import redis

from queue_pipelines.intake.entries import GROUP, IntakeEntry, entry_id_key
from queue_pipelines.intake.inflight import Assignment
from queue_pipelines.intake.streams import IntakeStreams

START = 1_700_000_000.0
# Redis 7's replies (what production runs); `make run`'s 6.2 is covered by the integration tier.
REDIS_VERSION = (7, 0)


class TestClock:
    """Unix seconds, moved only by the test."""

    def __init__(self, now: float = START):
        self.now = now

    def time(self) -> float:
        return self.now


class MemoryIntake(IntakeStreams):
    def __init__(self, clock: TestClock, prefix: str = "unit"):
        server = fakeredis.FakeServer(version=REDIS_VERSION)
        client = fakeredis.FakeRedis(
            server=server, decode_responses=True, encoding_errors="surrogateescape"
        )
        super().__init__(client, prefix=prefix)
        self._clock = clock
        self.calls: list[str] = []

    # the clock
    @property
    def clock(self) -> float:
        return self._clock.now

    @clock.setter
    def clock(self, now: float) -> None:
        self._clock.now = now

    def advance(self, seconds: float) -> float:
        self._clock.now += seconds
        return self._clock.now

    # the reads a tick makes, recorded
    def read(self, job_type: str, after_id: str, count: int) -> list[IntakeEntry]:
        self.calls.append("read")
        return super().read(job_type, after_id, count)

    def reclaim(
        self, job_type: str, min_idle_seconds: float, start_id: str, count: int
    ) -> tuple[str, list[IntakeEntry]]:
        self.calls.append("reclaim")
        return super().reclaim(job_type, min_idle_seconds, start_id, count)

    def wait_for_new(self, job_type: str, timeout_seconds: float) -> bool:
        self.calls.append("wait_for_new")
        if super().wait_for_new(job_type, 0.001):
            return True
        self.advance(timeout_seconds)
        return False

    # writing as other producers and operators do
    def add_raw(self, job_type: str, fields: dict[str, str]) -> str:
        """An entry with any fields at all, as a careless producer's XADD writes it."""
        return self.client.xadd(self.keys.stream(job_type), fields)

    def delete_entry(self, job_type: str, entry_id: str) -> None:
        """An operator's XDEL (or a producer's MAXLEN): the entry goes, its pending row stays."""
        self.client.xdel(self.keys.stream(job_type), entry_id)

    # looking
    def stream_ids(self, job_type: str) -> list[str]:
        return [entry_id for entry_id, _ in self.client.xrange(self.keys.stream(job_type))]

    def pending_ids(self, job_type: str) -> list[str]:
        self.ensure_group(job_type)
        rows = self.client.xpending_range(self.keys.stream(job_type), GROUP, "-", "+", 100_000)
        return sorted((row["message_id"] for row in rows), key=entry_id_key)

    def tracked(self, request_key: str) -> set[str]:
        """The entries recorded as carrying the request (its waiting set)."""
        return set(self.client.smembers(self.keys.waiting(request_key)))

    def all_assignments(self) -> dict[str, Assignment]:
        """Every request in flight in a batch, by request key."""
        head = self.keys.assigned("")
        request_keys = [key[len(head) :] for key in self.client.scan_iter(head + "*")]
        return self.assignments(request_keys) if request_keys else {}


def commands_sent(intake: MemoryIntake, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commands the intake's client sends from now on, one per round trip: a pipeline's
    are one PIPELINE (after the SCRIPT EXISTS it sends first when it holds a script)."""
    sent: list[str] = []
    send = intake.client.execute_command
    pipeline = redis.client.Pipeline
    execute, send_now = pipeline.execute, pipeline.immediate_execute_command

    def counted(*args, **options):
        sent.append(str(args[0]).upper())
        return send(*args, **options)

    def executed(pipe, *args, **options):
        sent.append("PIPELINE")
        return execute(pipe, *args, **options)

    def sent_now(pipe, *args, **options):
        sent.append(str(args[0]).upper())
        return send_now(pipe, *args, **options)

    monkeypatch.setattr(intake.client, "execute_command", counted)
    monkeypatch.setattr(pipeline, "execute", executed)
    monkeypatch.setattr(pipeline, "immediate_execute_command", sent_now)
    return sent


def memory_intake(monkeypatch: pytest.MonkeyPatch) -> MemoryIntake:
    """A MemoryIntake whose clock is `time.time` until the test ends (for fakeredis, and for
    the intake's own ages)."""
    clock = TestClock()
    monkeypatch.setattr(time, "time", clock.time)
    return MemoryIntake(clock)
