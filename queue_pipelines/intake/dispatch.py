"""One intake sensor tick, as plain code: read, validate, resolve each request against its
runs, and say what to launch. The Dagster sensor (sensors/intake.py) is a thin shell on this.

Every entry read is resolved against the runs that already exist for its request key:

    no run yet          -> remember the entry under its request, ask for a run
    run still going     -> remember the entry; the run's outcome settles it
    run succeeded       -> ack the entry now (a duplicate, or an ack the status sensor missed)
    run failed for good -> dead-letter the entry with the run's id
    not a valid entry   -> dead-letter it with the reason

Nothing here removes an entry that has not been resolved, so a tick that raises half way
leaves the rest pending: the next tick reads them again from the unchanged cursor, and the
run-key check keeps a request from being launched twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from queue_pipelines.intake.schema import Envelope, EnvelopeError, parse_envelope
from queue_pipelines.intake.streams import IntakeEntry, IntakeStreams, entry_id_key


class RunState(Enum):
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class RequestRuns:
    state: RunState
    run_id: str
    failure: str = ""  # why the run failed, for the dead letter


# Given request keys, the state of the runs that exist for each (absent: none yet).
RunLookup = Callable[[Sequence[str]], Mapping[str, RequestRuns]]


@dataclass(frozen=True)
class TickCursor:
    """Where the last successful tick got to: the newest entry id it resolved, and where the
    scan of stale pending entries goes on from."""

    last_id: str = "0-0"
    reclaim_from: str = "0-0"

    @classmethod
    def parse(cls, raw: str | None) -> TickCursor:
        return cls(**json.loads(raw)) if raw else cls()

    def dump(self) -> str:
        return json.dumps({"last_id": self.last_id, "reclaim_from": self.reclaim_from})


@dataclass
class Launch:
    envelope: Envelope
    entry_ids: list[str]


@dataclass
class TickOutcome:
    cursor: TickCursor
    launches: list[Launch] = field(default_factory=list)
    acked: int = 0
    dead_lettered: list[tuple[str, str]] = field(default_factory=list)  # (entry id, reason)
    waiting: int = 0
    read: int = 0

    def summary(self) -> str:
        return (
            f"read {self.read}, launched {len(self.launches)}, acked {self.acked}, "
            f"dead-lettered {len(self.dead_lettered)}, waiting on runs {self.waiting}"
        )


def envelope_of(entry: IntakeEntry, job_type: str) -> Envelope:
    """The entry's validated envelope. Any failure to read it is the entry's fault and is
    reported as EnvelopeError: one poisoned entry must not stop the stream behind it."""
    if entry.raw_envelope is None:
        raise EnvelopeError(
            f"entry has no 'envelope' field (fields: {', '.join(sorted(entry.fields))})"
        )
    try:
        return parse_envelope(entry.raw_envelope, expected_type=job_type)
    except EnvelopeError:
        raise
    except Exception as exc:
        raise EnvelopeError(f"unreadable entry: {type(exc).__name__}: {exc}") from exc


def run_intake_tick(
    streams: IntakeStreams,
    job_type: str,
    cursor: TickCursor,
    lookup_runs: RunLookup,
    *,
    max_entries: int,
    reclaim_after_seconds: float,
) -> TickOutcome:
    fresh = streams.read(job_type, cursor.last_id, max_entries)
    reclaim_from, stale = streams.reclaim(
        job_type, reclaim_after_seconds, cursor.reclaim_from, max_entries
    )
    entries: dict[str, IntakeEntry] = {e.entry_id: e for e in [*fresh, *stale]}

    last_id = max([cursor.last_id, *(e.entry_id for e in fresh)], key=entry_id_key)
    outcome = TickOutcome(cursor=TickCursor(last_id, reclaim_from), read=len(entries))

    # Oldest first, so that of several entries for one request the first one written is run.
    by_request: dict[str, tuple[Envelope, list[str]]] = {}
    for entry in sorted(entries.values(), key=lambda e: entry_id_key(e.entry_id)):
        try:
            envelope = envelope_of(entry, job_type)
        except EnvelopeError as exc:
            streams.dead_letter(job_type, [entry.entry_id], f"rejected: {exc.reason}")
            outcome.dead_lettered.append((entry.entry_id, exc.reason))
            continue
        _, ids = by_request.setdefault(envelope.request_key, (envelope, []))
        ids.append(entry.entry_id)

    runs = lookup_runs(list(by_request)) if by_request else {}
    for request_key, (envelope, ids) in by_request.items():
        existing = runs.get(request_key)
        if existing is None or existing.state is RunState.IN_PROGRESS:
            streams.track(job_type, request_key, ids)
            if existing is None:
                outcome.launches.append(Launch(envelope, ids))
            else:
                outcome.waiting += len(ids)
        elif existing.state is RunState.SUCCEEDED:
            outcome.acked += streams.ack(job_type, ids, request_key)
        else:
            reason = existing.failure or f"run {existing.run_id} failed"
            streams.dead_letter(
                job_type, ids, reason, run_id=existing.run_id, request_key=request_key
            )
            outcome.dead_lettered += [(entry_id, reason) for entry_id in ids]
    return outcome
