"""One intake sensor tick, as plain code: settle the batches whose run ended (settling.py),
read and validate new entries, and group the requests that need a run into micro-batches
(batches.py). The Dagster sensor (sensors/intake.py) is a thin shell on this.

Every entry read is resolved against its request:

    outcome recorded    -> ack or dead-letter at once (a duplicate of a settled request)
    in flight in a batch-> remember the entry; the batch's run settles it
    new                 -> remember the entry and put the request in a batch
    not a valid entry   -> dead-letter it with the reason

Nothing here removes an entry that has not been resolved, so a tick that raises half way
leaves the rest pending: the next tick reads them again from the unchanged cursor. A batch is
recorded before its run is requested, so a repeated tick requests the same run key again
(which the daemon launches once) and never puts a request in a second batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from queue_pipelines.intake.batches import Batch, BatchItem, BatchPolicy, form_batches
from queue_pipelines.intake.entries import IntakeEntry, entry_id_key
from queue_pipelines.intake.request_records import FirstRequest, request_digest
from queue_pipelines.intake.schema import Envelope, EnvelopeError, parse_envelope
from queue_pipelines.intake.settling import RunLookup, settle_ended_batches
from queue_pipelines.intake.streams import IntakeStreams


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
class TickOutcome:
    cursor: TickCursor
    launches: list[Batch] = field(default_factory=list)
    acked: int = 0
    dead_lettered: list[tuple[str, str]] = field(default_factory=list)  # (what, reason)
    waiting: int = 0
    held: int = 0  # requests waiting for a fuller batch
    held_due: float | None = None  # when the first of those batches goes anyway (unix time)
    relaunched: int = 0
    read: int = 0

    @property
    def idle(self) -> bool:
        return not (self.read or self.launches or self.acked or self.dead_lettered)

    def absorb(self, later: TickOutcome) -> list[Batch]:
        """Add a later tick of the same evaluation: its counts, its cursor and what it holds.
        Returns the batches it added."""
        self.cursor, self.waiting = later.cursor, later.waiting
        self.held, self.held_due = later.held, later.held_due
        # A later tick requests again the batches an earlier one recorded, whose runs the
        # daemon has not created yet (this evaluation has not returned): once is enough.
        requested = {batch.key for batch in self.launches}
        added = [batch for batch in later.launches if batch.key not in requested]
        self.launches += added
        self.dead_lettered += later.dead_lettered
        self.acked += later.acked
        self.relaunched += later.relaunched
        self.read += later.read
        return added

    def summary(self) -> str:
        return (
            f"read {self.read}, batched {sum(len(b.items) for b in self.launches)} requests "
            f"into {len(self.launches)} runs ({self.relaunched} again after an interrupted "
            f"run), acked {self.acked}, dead-lettered {len(self.dead_lettered)}, waiting on "
            f"runs {self.waiting}, waiting for a fuller batch {self.held}"
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


def entry_before(entry_id: str) -> str:
    """The id just before `entry_id`: reading after it reads `entry_id` again."""
    ms, seq = entry_id_key(entry_id)
    return f"{ms}-{seq - 1}" if seq else f"{ms - 1}-18446744073709551615"


def _same_request(
    streams: IntakeStreams,
    job_type: str,
    first: FirstRequest,
    group: list[tuple[str, Envelope, str]],
    outcome: TickOutcome,
) -> tuple[Envelope, list[str]] | None:
    """The entries of `group` (entry id, envelope, its request digest) that carry the request
    first written under its key (`first`), with its envelope. An idempotency key reused for a
    different payload is not a duplicate: such entries are dead-lettered with that reason (the
    gateway answers them 409)."""
    same: list[tuple[str, Envelope]] = []
    for entry_id, envelope, digest in group:
        if first.conflicts_with(digest):
            reason = (
                f"rejected: idempotency key {envelope.idempotency_key!r} was first used for a "
                f"different {job_type} request (entry {first.entry_id}); a new request needs "
                "a new key"
            )
            streams.dead_letter(job_type, [entry_id], reason)
            outcome.dead_lettered.append((entry_id, reason))
        else:
            same.append((entry_id, envelope))
    if not same:
        return None
    return same[0][1], [entry_id for entry_id, _ in same]


def run_intake_tick(
    streams: IntakeStreams,
    job_type: str,
    cursor: TickCursor,
    lookup_runs: RunLookup,
    *,
    policy: BatchPolicy,
    max_entries: int,
    reclaim_after_seconds: float,
    now: float,
) -> TickOutcome:
    fresh = streams.read(job_type, cursor.last_id, max_entries)
    reclaim_from, stale = streams.reclaim(
        job_type, reclaim_after_seconds, cursor.reclaim_from, max_entries
    )
    entries: dict[str, IntakeEntry] = {e.entry_id: e for e in [*fresh, *stale]}
    last_id = max([cursor.last_id, *(e.entry_id for e in fresh)], key=entry_id_key)
    outcome = TickOutcome(cursor=TickCursor(last_id, reclaim_from), read=len(entries))

    settled = settle_ended_batches(streams, job_type, lookup_runs, policy)
    again = settled.again
    outcome.launches += settled.unlaunched
    outcome.acked += settled.acked
    outcome.dead_lettered += settled.dead_lettered
    outcome.relaunched += len(again)

    # Oldest first, so that of several entries for one request the first one written is run.
    grouped: dict[str, list[tuple[str, Envelope, str]]] = {}
    for entry in sorted(entries.values(), key=lambda e: entry_id_key(e.entry_id)):
        try:
            envelope = envelope_of(entry, job_type)
        except EnvelopeError as exc:
            streams.dead_letter(job_type, [entry.entry_id], f"rejected: {exc.reason}")
            outcome.dead_lettered.append((entry.entry_id, exc.reason))
            continue
        grouped.setdefault(envelope.request_key, []).append(
            (entry.entry_id, envelope, request_digest(envelope))
        )
    # Each request's first entry, recorded unless one is: for all of them in one round trip.
    firsts = (
        streams.remember_requests(
            [(key, group[0][2], group[0][0]) for key, group in grouped.items()]
        )
        if grouped
        else {}
    )
    by_request = {
        key: same
        for key, group in grouped.items()
        if (same := _same_request(streams, job_type, firsts[key], group, outcome))
    }

    keys = list(by_request)
    recorded = streams.outcomes(keys) if keys else {}
    assigned = streams.assignments(keys) if keys else {}
    relaunching = {item.request_key for item in again}
    tenant_of = {item.request_key: item.request_key.split(":")[1] for item in again}
    new: list[BatchItem] = []
    first_entry: dict[str, str] = {}
    to_track: dict[str, list[str]] = {}
    for request_key, (envelope, ids) in by_request.items():
        found = recorded.get(request_key)
        if found is not None and request_key not in relaunching:
            if found.succeeded:
                outcome.acked += streams.ack(job_type, ids, request_key)
            else:
                streams.dead_letter(
                    job_type, ids, found.reason, run_id=found.run_id, request_key=request_key
                )
                outcome.dead_lettered += [(entry_id, found.reason) for entry_id in ids]
            continue
        to_track[request_key] = ids
        if request_key in assigned or request_key in relaunching:
            outcome.waiting += len(ids)
            continue
        new.append(BatchItem.of(envelope, ids[0]))
        tenant_of[request_key] = envelope.tenant_id
        first_entry[request_key] = ids[0]
    if to_track:  # before any batch is recorded: its run settles the entries tracked
        streams.track_all(job_type, to_track)

    batches, held, held_due = form_batches(
        job_type,
        [*again, *new],
        tenant_of,
        policy,
        now=now,
        must_go=relaunching,
        busy_tenants=settled.busy_tenants,
    )
    for batch in batches:
        streams.assign_batch(
            job_type,
            batch.key,
            batch.to_json(),
            {item.request_key: item.attempt for item in batch.items},
        )
    outcome.launches += batches
    if held:
        outcome.held, outcome.held_due = len(held), held_due
        # Read the held requests again next tick: they are pending, after the cursor.
        earliest = min((first_entry[i.request_key] for i in held), key=entry_id_key)
        if entry_id_key(earliest) <= entry_id_key(outcome.cursor.last_id):
            outcome.cursor = TickCursor(entry_before(earliest), outcome.cursor.reclaim_from)
    return outcome


def run_intake_ticks(
    streams: IntakeStreams,
    job_type: str,
    cursor: TickCursor,
    lookup_runs: RunLookup,
    *,
    policy: BatchPolicy,
    max_entries: int,
    reclaim_after_seconds: float,
    listen_seconds: float,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> TickOutcome:
    """One sensor evaluation: a tick, then, for as long as nothing was launched and
    `listen_seconds` have not passed, a wait for what the tick is waiting on and another tick.

    Dagster's sensor daemon starts evaluations at most every 5 seconds, whatever a sensor's
    minimum interval says (its loop's floor). A single tick per evaluation would therefore
    leave a new request unseen for up to 5 s, and a batch held for a fuller one up to 5 s
    past its `max_wait_seconds`. Instead the evaluation sleeps until the held batch is due,
    or blocks in Redis until a new entry arrives, and ticks again; it returns as soon as it
    has a run to request, so the run is not kept waiting for the rest of the window. One
    exception: a tick that filled a batch is reading a burst, and when more of it has come
    meanwhile the evaluation ticks again at once (within the window), so that the burst's
    tail is not left to the next evaluation, 5 s later.
    """

    def tick(at: TickCursor) -> TickOutcome:
        return run_intake_tick(
            streams, job_type, at, lookup_runs,
            policy=policy, max_entries=max_entries,
            reclaim_after_seconds=reclaim_after_seconds, now=clock(),
        )  # fmt: skip

    deadline = clock() + listen_seconds
    total = tick(cursor)
    added = total.launches
    while (remaining := deadline - clock()) > 0:
        if total.launches:
            filled = any(len(batch.items) >= policy.size for batch in added)
            if not (filled and streams.wait_for_new(job_type, 0.001)):
                break
        elif total.held_due is not None:
            sleep(min(remaining, max(total.held_due - clock() + 0.01, 0.05)))
        elif not streams.wait_for_new(job_type, remaining):
            break
        added = total.absorb(tick(total.cursor))
    return total
