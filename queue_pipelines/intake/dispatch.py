"""One intake sensor tick, as plain code: settle the batches whose run ended, read and
validate new entries, and group the requests that need a run into micro-batches. The Dagster
sensor (sensors/intake.py) is a thin shell on this.

The settle rule, the one place that decides what a finished run means for its requests:

    the run recorded the request's outcome  -> ack it (succeeded) or dead-letter it (failed)
    no outcome, the run started work       -> batch the request again (attempt + 1), or
                (crash, cancel, transient      dead-letter it once `max_attempts` runs have
                 give-up)                      ended without settling it
    no outcome, the run never started a    -> batch it again without counting an attempt: that
                step (launch failure, cancel   is not the request's fault; only after
                before start, shutdown)        `max_launch_failures` such runs is it
                                               dead-lettered, saying nothing was done

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
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from queue_pipelines.intake.entries import IntakeEntry, entry_id_key
from queue_pipelines.intake.request_records import request_digest
from queue_pipelines.intake.schema import Envelope, EnvelopeError, parse_envelope
from queue_pipelines.intake.streams import IntakeStreams


class RunState(Enum):
    IN_PROGRESS = "in_progress"
    ENDED = "ended"  # succeeded, failed or canceled: the outcomes it recorded say the rest


@dataclass(frozen=True)
class BatchRun:
    state: RunState
    run_id: str
    failure: str = ""  # why the run failed, for requests it never settled
    started: bool = True  # whether any step of it started: none, and nothing was attempted


# Given batch keys, the state of the run that exists for each (absent: none yet).
RunLookup = Callable[[Sequence[str]], Mapping[str, BatchRun]]


@dataclass(frozen=True)
class BatchPolicy:
    size: int = 100  # requests of one tenant per run; 1 is one run per request
    max_wait_seconds: float = 0.5  # how long a smaller batch waits for more
    max_attempts: int = 3  # runs that may end without settling a request
    max_launch_failures: int = 20  # runs that may end before any step started


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


@dataclass(frozen=True)
class BatchItem:
    """One request in a batch, as its run's config carries it."""

    request_key: str
    idempotency_key: str
    payload: dict
    priority: int
    enqueued_at: float  # unix seconds, from the first entry's id
    attempt: int = 1
    launch_failures: int = 0  # runs of it that ended before any step started

    def as_config(self) -> dict:
        return {
            "idempotency_key": self.idempotency_key,
            "payload": self.payload,
            "priority": self.priority,
            "enqueued_at": self.enqueued_at,
            "attempt": self.attempt,
        }

    @classmethod
    def of(cls, envelope: Envelope, entry_id: str, attempt: int = 1) -> BatchItem:
        return cls(
            request_key=envelope.request_key,
            idempotency_key=envelope.idempotency_key,
            payload=envelope.payload.model_dump(mode="json", exclude_none=True),
            priority=envelope.priority,
            enqueued_at=entry_id_key(entry_id)[0] / 1000,
            attempt=attempt,
        )


@dataclass(frozen=True)
class Batch:
    """A run to request: up to BatchPolicy.size requests of one job type and one tenant."""

    key: str
    job_type: str
    tenant_id: str
    items: tuple[BatchItem, ...]

    @property
    def priority(self) -> int:
        return max(item.priority for item in self.items)

    def to_json(self) -> dict:
        return {
            "key": self.key,
            "job_type": self.job_type,
            "tenant_id": self.tenant_id,
            "items": [
                {
                    "request_key": i.request_key,
                    "launch_failures": i.launch_failures,
                    **i.as_config(),
                }
                for i in self.items
            ],
        }

    @classmethod
    def of(cls, envelopes: Sequence[Envelope]) -> Batch:
        """A batch of the given requests (one job type, one tenant), e.g. for a run launched
        by hand; the sensor forms its own."""
        first = envelopes[0]
        if any((e.type, e.tenant_id) != (first.type, first.tenant_id) for e in envelopes):
            raise ValueError("a batch holds requests of one job type and one tenant")
        stamp = f"{int(first.created_at.timestamp() * 1000)}-0"
        return cls(
            new_batch_key(first.type, first.tenant_id),
            first.type,
            first.tenant_id,
            tuple(BatchItem.of(e, stamp) for e in envelopes),
        )

    @classmethod
    def from_json(cls, data: dict) -> Batch:
        return cls(
            key=data["key"],
            job_type=data["job_type"],
            tenant_id=data["tenant_id"],
            items=tuple(BatchItem(**item) for item in data["items"]),
        )


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

    def absorb(self, later: TickOutcome) -> None:
        """Add a later tick of the same evaluation: its counts, its cursor and what it holds."""
        self.cursor, self.waiting = later.cursor, later.waiting
        self.held, self.held_due = later.held, later.held_due
        self.launches += later.launches
        self.dead_lettered += later.dead_lettered
        self.acked += later.acked
        self.relaunched += later.relaunched
        self.read += later.read

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


def new_batch_key(job_type: str, tenant_id: str) -> str:
    # Unique, not derived from the members: what makes a repeated tick request the same run
    # is the batch recorded in Redis before the run is requested.
    return f"{job_type}:{tenant_id}:{uuid.uuid4().hex[:16]}"


def entry_before(entry_id: str) -> str:
    """The id just before `entry_id`: reading after it reads `entry_id` again."""
    ms, seq = entry_id_key(entry_id)
    return f"{ms}-{seq - 1}" if seq else f"{ms - 1}-18446744073709551615"


def settle_ended_batches(
    streams: IntakeStreams,
    job_type: str,
    lookup_runs: RunLookup,
    policy: BatchPolicy,
    outcome: TickOutcome,
) -> list[BatchItem]:
    """Apply the settle rule to every in-flight batch whose run has ended; returns the
    requests to batch again. Batches whose run is missing are requested again as they are."""
    batch_keys = streams.inflight_batches(job_type)
    if not batch_keys:
        return []
    runs = lookup_runs(batch_keys)
    again: list[BatchItem] = []
    for batch_key in batch_keys:
        stored = streams.batch(batch_key)
        if stored is None:  # finished by an earlier tick that failed before its cursor
            streams.finish_batch(job_type, batch_key, [])
            continue
        batch = Batch.from_json(stored)
        run = runs.get(batch_key)
        if run is None:
            outcome.launches.append(batch)  # the same run key: launched once by the daemon
            continue
        if run.state is RunState.IN_PROGRESS:
            continue
        keys = [item.request_key for item in batch.items]
        recorded = streams.outcomes(keys)
        for item in batch.items:
            found = recorded.get(item.request_key)
            if found is not None:
                # The run recorded it; settling again is harmless and covers a crash between
                # recording and acking.
                if found.succeeded:
                    outcome.acked += streams.settle(job_type, item.request_key)
                else:
                    streams.dead_letter_request(
                        job_type, item.request_key, found.reason, found.run_id
                    )
            elif not run.started and item.launch_failures + 1 < policy.max_launch_failures:
                again.append(replace(item, launch_failures=item.launch_failures + 1))
            elif not run.started:
                reason = (
                    f"{run.failure or f'run {run.run_id} ended'}; {item.launch_failures + 1} runs "
                    "of the request ended before any step started, so nothing was done for it: "
                    "replay it once the stack launches runs again"
                )
                streams.request_failed(job_type, item.request_key, reason, run.run_id)
                outcome.dead_lettered.append((item.request_key, reason))
            elif item.attempt < policy.max_attempts:
                again.append(replace(item, attempt=item.attempt + 1))
            else:
                reason = (
                    f"{run.failure or f'run {run.run_id} ended'}; the request was not settled "
                    f"after {item.attempt} runs"
                )
                streams.request_failed(job_type, item.request_key, reason, run.run_id)
                outcome.dead_lettered.append((item.request_key, reason))
        streams.finish_batch(job_type, batch_key, keys)
    outcome.relaunched += len(again)
    return again


def form_batches(
    job_type: str,
    items: Sequence[BatchItem],
    tenant_of: Mapping[str, str],
    policy: BatchPolicy,
    *,
    now: float,
    must_go: set[str],
) -> tuple[list[Batch], list[BatchItem]]:
    """Group requests by tenant, highest priority first then oldest, into batches of at most
    `policy.size`. A tenant's last, smaller batch waits (returned second) while its oldest
    request is younger than `policy.max_wait_seconds`, unless it holds a request in `must_go`."""
    by_tenant: dict[str, list[BatchItem]] = {}
    for item in items:
        by_tenant.setdefault(tenant_of[item.request_key], []).append(item)
    batches: list[Batch] = []
    held: list[BatchItem] = []
    for tenant_id, tenant_items in sorted(by_tenant.items()):
        tenant_items.sort(key=lambda i: (-i.priority, i.enqueued_at))
        for start in range(0, len(tenant_items), policy.size):
            chunk = tenant_items[start : start + policy.size]
            oldest = min(i.enqueued_at for i in chunk)
            waiting_for_more = (
                len(chunk) < policy.size
                and now - oldest < policy.max_wait_seconds
                and not any(i.request_key in must_go for i in chunk)
            )
            if waiting_for_more:
                held += chunk
            else:
                key = new_batch_key(job_type, tenant_id)
                batches.append(Batch(key, job_type, tenant_id, tuple(chunk)))
    # Higher priority batches first: the run queue orders runs by priority, then by age.
    batches.sort(key=lambda b: -b.priority)
    return batches, held


def _same_request(
    streams: IntakeStreams,
    job_type: str,
    request_key: str,
    group: list[tuple[str, Envelope]],
    outcome: TickOutcome,
) -> tuple[Envelope, list[str]] | None:
    """The entries of `group` that carry the request first written under its key, with its
    envelope. An idempotency key reused for a different payload is not a duplicate: such
    entries are dead-lettered with that reason (the gateway answers them 409)."""
    first_id, first_envelope = group[0]
    first = streams.remember_request(request_key, request_digest(first_envelope), first_id)
    same: list[tuple[str, Envelope]] = []
    for entry_id, envelope in group:
        if first.conflicts_with(request_digest(envelope)):
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

    again = settle_ended_batches(streams, job_type, lookup_runs, policy, outcome)

    # Oldest first, so that of several entries for one request the first one written is run.
    grouped: dict[str, list[tuple[str, Envelope]]] = {}
    for entry in sorted(entries.values(), key=lambda e: entry_id_key(e.entry_id)):
        try:
            envelope = envelope_of(entry, job_type)
        except EnvelopeError as exc:
            streams.dead_letter(job_type, [entry.entry_id], f"rejected: {exc.reason}")
            outcome.dead_lettered.append((entry.entry_id, exc.reason))
            continue
        grouped.setdefault(envelope.request_key, []).append((entry.entry_id, envelope))
    by_request = {
        key: same
        for key, group in grouped.items()
        if (same := _same_request(streams, job_type, key, group, outcome))
    }

    keys = list(by_request)
    recorded = streams.outcomes(keys) if keys else {}
    assigned = streams.assignments(keys) if keys else {}
    relaunching = {item.request_key for item in again}
    tenant_of = {item.request_key: item.request_key.split(":")[1] for item in again}
    new: list[BatchItem] = []
    first_entry: dict[str, str] = {}
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
        streams.track(job_type, request_key, ids)
        if request_key in assigned or request_key in relaunching:
            outcome.waiting += len(ids)
            continue
        new.append(BatchItem.of(envelope, ids[0]))
        tenant_of[request_key] = envelope.tenant_id
        first_entry[request_key] = ids[0]

    batches, held = form_batches(
        job_type, [*again, *new], tenant_of, policy, now=now, must_go=relaunching
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
        outcome.held = len(held)
        outcome.held_due = min(i.enqueued_at for i in held) + policy.max_wait_seconds
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
    has a run to request, so the run is not kept waiting for the rest of the window.
    """

    def tick(at: TickCursor) -> TickOutcome:
        return run_intake_tick(
            streams, job_type, at, lookup_runs,
            policy=policy, max_entries=max_entries,
            reclaim_after_seconds=reclaim_after_seconds, now=clock(),
        )  # fmt: skip

    deadline = clock() + listen_seconds
    total = tick(cursor)
    while not total.launches and (remaining := deadline - clock()) > 0:
        if total.held_due is not None:
            sleep(min(remaining, max(total.held_due - clock() + 0.01, 0.1)))
        elif not streams.wait_for_new(job_type, remaining):
            break
        total.absorb(tick(total.cursor))
    return total
