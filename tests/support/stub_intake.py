"""An in-memory stand-in for IntakeStreams (queue_pipelines/intake/streams.py), written for the
unit tier the way dramatiq's StubBroker stands in for a broker: the operations a tick calls,
with the Redis version's semantics, and nothing to start.

What it keeps, as Redis does: one stream per job type (entry id -> fields) and its consumer
group's pending list (entry id -> when it was last delivered, how often); the dead-letter
stream; and the batch bookkeeping (waiting sets, assignments, batches, in-flight sets,
outcomes). The rules it copies, checked against Redis 7.0:

- `read` returns this consumer's pending entries after `after_id` (delivering them again:
  their idle time restarts), then never-delivered ones, `count` at most; a pending entry
  deleted from the stream meanwhile is acked and skipped.
- `reclaim` scans the pending list from `start_id` like XAUTOCLAIM: `count` entries examined
  at most (a deleted one counts, and leaves the pending list), those idle long enough are
  delivered again; the cursor is the next pending id, or '0-0' at the end.
- ack and dead-letter delete the entry; dead-lettering copies its fields with the reason.

Time is `clock` (unix seconds), moved by the test: entry ids are made from it, as Redis makes
them from its own clock, and idle times are measured on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from queue_pipelines.intake.registry import JOB_TYPES
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.intake.streams import (
    ENVELOPE_FIELD,
    FAILED,
    SUCCEEDED,
    Assignment,
    FirstRequest,
    IntakeEntry,
    Outcome,
    entry_id_key,
)


@dataclass
class _Delivery:
    at: float
    count: int


class StubIntakeStreams:
    """IntakeStreams in memory. Inspect it through `stream_ids`, `pending_ids`,
    `dead_letters`, `waiting` and `calls` (the name of every operation called, in order)."""

    def __init__(self, clock: float = 1_700_000_000.0):
        self.clock = clock
        self.streams: dict[str, dict[str, dict[str, str]]] = {t: {} for t in JOB_TYPES}
        self.delivered_up_to: dict[str, str] = dict.fromkeys(JOB_TYPES, "0-0")
        self.pending: dict[str, dict[str, _Delivery]] = {t: {} for t in JOB_TYPES}
        self.dead_letter_stream: list[dict[str, str]] = []
        self.waiting: dict[str, set[str]] = {}
        self.assigned: dict[str, dict[str, str]] = {}
        self.batches: dict[str, str] = {}
        self.inflight: dict[str, set[str]] = {}
        self.recorded: dict[str, Outcome] = {}
        self.first_requests: dict[str, FirstRequest] = {}
        self.calls: list[str] = []
        self._last_id = (0, 0)

    # the clock and ids
    def advance(self, seconds: float) -> float:
        self.clock += seconds
        return self.clock

    def _next_id(self) -> str:
        ms = int(self.clock * 1000)
        last_ms, last_seq = self._last_id
        self._last_id = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return "{}-{}".format(*self._last_id)

    def _stream(self, job_type: str) -> dict[str, dict[str, str]]:
        if job_type not in JOB_TYPES:
            raise ValueError(
                f"unknown job type {job_type!r}: expected one of {', '.join(JOB_TYPES)}"
            )
        return self.streams[job_type]

    # producer side, and helpers for tests
    def enqueue(self, envelope: Envelope) -> str:
        return self.add_raw(envelope.type, {ENVELOPE_FIELD: envelope.to_wire()})

    def enqueue_many(self, envelopes: Sequence[Envelope]) -> list[str]:
        return [self.enqueue(envelope) for envelope in envelopes]

    def add_raw(self, job_type: str, fields: dict[str, str]) -> str:
        """An entry with any fields at all, as a careless producer's XADD writes it."""
        if not fields:
            raise ValueError("an entry has at least one field (XADD requires one)")
        entry_id = self._next_id()
        self._stream(job_type)[entry_id] = dict(fields)
        return entry_id

    def delete_entry(self, job_type: str, entry_id: str) -> None:
        """An operator's XDEL (or a producer's MAXLEN): the entry goes, its pending row stays."""
        self._stream(job_type).pop(entry_id, None)

    def stream_ids(self, job_type: str) -> list[str]:
        return sorted(self._stream(job_type), key=entry_id_key)

    def pending_ids(self, job_type: str) -> list[str]:
        return sorted(self.pending[job_type], key=entry_id_key)

    def delivery_count(self, job_type: str, entry_id: str) -> int:
        return self.pending[job_type][entry_id].count

    def dead_letters(self, count: int = 100) -> list[dict]:
        """Newest first, each with its original fields decoded, as IntakeStreams gives them."""
        letters = []
        for letter in reversed(self.dead_letter_stream[-count:]):
            letters.append({**letter, "fields": json.loads(letter["fields"])})
        return letters

    # consumer side
    def read(self, job_type: str, after_id: str, count: int) -> list[IntakeEntry]:
        self.calls.append("read")
        stream, pending = self._stream(job_type), self.pending[job_type]
        history = [i for i in pending if entry_id_key(i) > entry_id_key(after_id)]
        history = sorted(history, key=entry_id_key)[:count]
        for entry_id in history:
            pending[entry_id] = _Delivery(self.clock, pending[entry_id].count + 1)
        entries = self._live(job_type, history)
        if len(entries) < count:
            after = entry_id_key(self.delivered_up_to[job_type])
            new = [i for i in sorted(stream, key=entry_id_key) if entry_id_key(i) > after]
            new = new[: count - len(entries)]
            for entry_id in new:
                pending[entry_id] = _Delivery(self.clock, 1)
            if new:
                self.delivered_up_to[job_type] = new[-1]
            entries += self._live(job_type, new)
        return entries

    def wait_for_new(self, job_type: str, timeout_seconds: float) -> bool:
        """Nothing arrives while a unit test waits: an undelivered entry is there already,
        or the wait runs out (the clock moves by the timeout)."""
        self.calls.append("wait_for_new")
        after = entry_id_key(self.delivered_up_to[job_type])
        if any(entry_id_key(i) > after for i in self._stream(job_type)):
            return True
        self.clock += timeout_seconds
        return False

    def reclaim(
        self, job_type: str, min_idle_seconds: float, start_id: str, count: int
    ) -> tuple[str, list[IntakeEntry]]:
        self.calls.append("reclaim")
        stream, pending = self._stream(job_type), self.pending[job_type]
        scan = [
            i
            for i in sorted(pending, key=entry_id_key)
            if entry_id_key(i) >= entry_id_key(start_id)
        ]
        claimed: list[str] = []
        examined = 0
        for entry_id in scan[:count]:
            examined += 1
            if entry_id not in stream:
                del pending[entry_id]  # Redis 7 drops it and lists its id apart
                continue
            if self.clock - pending[entry_id].at >= min_idle_seconds:
                pending[entry_id] = _Delivery(self.clock, pending[entry_id].count + 1)
                claimed.append(entry_id)
        cursor = scan[examined] if examined < len(scan) else "0-0"
        return cursor, self._live(job_type, claimed)

    def _live(self, job_type: str, entry_ids: Iterable[str]) -> list[IntakeEntry]:
        stream, pending = self.streams[job_type], self.pending[job_type]
        entries = []
        for entry_id in entry_ids:
            if entry_id in stream:
                entries.append(IntakeEntry(job_type, entry_id, dict(stream[entry_id])))
            else:
                pending.pop(entry_id, None)  # deleted meanwhile: nothing to deliver, acked
        return entries

    def _ack_and_delete(self, job_type: str, entry_id: str) -> int:
        acked = int(self.pending[job_type].pop(entry_id, None) is not None)
        self.streams[job_type].pop(entry_id, None)
        return acked

    def track(self, job_type: str, request_key: str, entry_ids: Iterable[str]) -> None:
        self.calls.append("track")
        ids = list(entry_ids)
        if ids:
            self.waiting.setdefault(request_key, set()).update(ids)

    def settle(self, job_type: str, request_key: str) -> int:
        self.calls.append("settle")
        self._stream(job_type)
        ids = self.waiting.pop(request_key, set())
        for entry_id in ids:
            self._ack_and_delete(job_type, entry_id)
        return len(ids)  # as the script: the entries it settled, acked before or not

    def ack(self, job_type: str, entry_ids: Sequence[str], request_key: str = "") -> int:
        self.calls.append("ack")
        if not entry_ids:
            return 0
        self._stream(job_type)
        acked = sum(self._ack_and_delete(job_type, entry_id) for entry_id in entry_ids)
        if request_key:
            self._srem(request_key, entry_ids)
        return acked

    def _srem(self, request_key: str, entry_ids: Iterable[str]) -> None:
        members = self.waiting.get(request_key)
        if members is not None:
            members.difference_update(entry_ids)
            if not members:
                del self.waiting[request_key]  # Redis removes an emptied set

    def dead_letter(
        self,
        job_type: str,
        entry_ids: Sequence[str],
        reason: str,
        run_id: str = "",
        request_key: str = "",
    ) -> int:
        self.calls.append("dead_letter")
        if not entry_ids:
            return 0
        stream = self._stream(job_type)
        count = 0
        for entry_id in entry_ids:
            if entry_id in stream:
                self.dead_letter_stream.append(
                    {
                        "stream": f"stub:intake:{job_type}",
                        "entry_id": entry_id,
                        "reason": reason,
                        "run_id": run_id,
                        "request_key": request_key,
                        "fields": json.dumps(stream[entry_id]),
                        "dead_lettered_at": datetime.fromtimestamp(self.clock, UTC).isoformat(),
                    }
                )
                count += self._ack_and_delete(job_type, entry_id)
            else:
                self.pending[job_type].pop(entry_id, None)
            self._srem(request_key, [entry_id])
        return count

    def dead_letter_request(self, job_type: str, request_key: str, reason: str, run_id: str) -> int:
        self.calls.append("dead_letter_request")
        ids = sorted(self.waiting.get(request_key, set()), key=entry_id_key)
        return self.dead_letter(job_type, ids, reason, run_id=run_id, request_key=request_key)

    # batches
    def remember_request(
        self, request_key: str, digest: str, entry_id: str, ttl_seconds: int = 0
    ) -> FirstRequest:
        self.calls.append("remember_request")
        return self.first_requests.setdefault(request_key, FirstRequest(entry_id, digest))

    def assign_batch(
        self, job_type: str, batch_key: str, batch: dict, attempts: dict[str, int]
    ) -> None:
        self.calls.append("assign_batch")
        self.batches[batch_key] = json.dumps(batch)  # stored as JSON, read back as JSON
        self.inflight.setdefault(job_type, set()).add(batch_key)
        for request_key, attempt in attempts.items():
            self.assigned[request_key] = {"batch": batch_key, "attempt": str(attempt)}

    def inflight_batches(self, job_type: str) -> list[str]:
        self.calls.append("inflight_batches")
        return sorted(self.inflight.get(job_type, set()))

    def batch(self, batch_key: str) -> dict | None:
        self.calls.append("batch")
        raw = self.batches.get(batch_key)
        return json.loads(raw) if raw else None

    def finish_batch(self, job_type: str, batch_key: str, request_keys: Sequence[str]) -> None:
        self.calls.append("finish_batch")
        for request_key in request_keys:
            if self.assigned.get(request_key, {}).get("batch") == batch_key:
                del self.assigned[request_key]
        self.batches.pop(batch_key, None)
        self.inflight.get(job_type, set()).discard(batch_key)

    def assignments(self, request_keys: Sequence[str]) -> dict[str, Assignment]:
        self.calls.append("assignments")
        return {
            key: Assignment(self.assigned[key]["batch"], int(self.assigned[key]["attempt"]))
            for key in request_keys
            if key in self.assigned
        }

    def outcomes(self, request_keys: Sequence[str]) -> dict[str, Outcome]:
        self.calls.append("outcomes")
        return {key: self.recorded[key] for key in request_keys if key in self.recorded}

    def request_succeeded(self, job_type: str, request_key: str, run_id: str) -> int:
        self.calls.append("request_succeeded")
        self.recorded[request_key] = Outcome(SUCCEEDED, run_id=run_id)
        return self.settle(job_type, request_key)

    def request_failed(self, job_type: str, request_key: str, reason: str, run_id: str) -> int:
        self.calls.append("request_failed")
        self.recorded[request_key] = Outcome(FAILED, reason, run_id)
        return self.dead_letter_request(job_type, request_key, reason, run_id)
