"""Redis Streams behind the intake: one stream per job type, one consumer group, a dead letter.

An entry stays in its stream, pending in the group, until the request it carries is settled:
acked and deleted once its run succeeded, or moved to the dead-letter stream with a reason.
Entries are tracked per request key (job type, tenant, idempotency key) rather than per run,
so one run may settle many entries (duplicates, and the requests of a micro-batch).

Batch bookkeeping, beside the streams (see dispatch.py for how a tick uses it):

    {prefix}:assigned:<request key>   the batch a request is in flight in, and its attempt
    {prefix}:batch:<batch key>        the batch's requests, to request its run again
    {prefix}:inflight:<job type>      batches whose run has not been seen to end
    {prefix}:outcome:<request key>    how the request ended (kept OUTCOME_TTL_SECONDS), so a
                                      late duplicate is acked or dead-lettered without a run
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import redis

from queue_pipelines.intake.registry import JOB_TYPES
from queue_pipelines.intake.schema import Envelope


def _lua(name: str) -> str:
    """A Redis script of the intake, kept as a .lua file beside this module."""
    return (Path(__file__).parent / "lua" / name).read_text()


GROUP = "queue-pipelines"
# Long enough for any duplicate a producer may still send; the effect ledger stays the
# guarantee after that (a duplicate then runs, and replays the recorded effect).
OUTCOME_TTL_SECONDS = 7 * 24 * 3600
SUCCEEDED = "succeeded"
FAILED = "failed"
CONSUMER = "dagster-sensor"
ENVELOPE_FIELD = "envelope"
# `queue stats` reads at most this many entries of a stream to age its waiting per tenant.
STATS_SCAN = 20_000

# Moves entries to the dead letter (copying their fields) and removes them from the intake in
# one atomic step, so that a crash in between can neither lose nor duplicate an entry.
_DEAD_LETTER_SCRIPT = _lua("dead_letter.lua")

# The first (entry id, payload digest) of a request key, kept unless one is there already.
_REMEMBER_REQUEST_SCRIPT = _lua("remember_request.lua")
# Stripe retries an unacknowledged event for up to three days; clients retry for less.
REQUEST_RECORD_SECONDS = 3 * 24 * 3600

_SETTLE_SCRIPT = _lua("settle.lua")
# A replayed dead letter's request may run again: its failed outcome goes, and a fixed
# payload becomes the one its key stands for.
_REOPEN_REQUEST_SCRIPT = _lua("reopen_request.lua")


@dataclass(frozen=True)
class Outcome:
    """How a request ended: `succeeded`, or `failed` for good with `reason`."""

    status: str
    reason: str = ""
    run_id: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED


@dataclass(frozen=True)
class Assignment:
    batch_key: str
    attempt: int


@dataclass(frozen=True)
class IntakeEntry:
    """One stream entry as read: its id and raw fields (not yet validated)."""

    job_type: str
    entry_id: str
    fields: dict[str, str]

    @property
    def raw_envelope(self) -> str | None:
        return self.fields.get(ENVELOPE_FIELD)


def request_digest(envelope: Envelope) -> str:
    """What makes two requests with one key "the same request": their payloads, as canonical
    JSON. Envelope id, created_at and priority may differ between a request and its retry."""
    payload = envelope.payload.model_dump(mode="json")
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class FirstRequest:
    """The first entry recorded for a request key, and its payload digest."""

    entry_id: str
    digest: str

    def conflicts_with(self, digest: str) -> bool:
        return self.digest != digest


@dataclass(frozen=True)
class TenantWaiting:
    waiting: int
    oldest_age_seconds: float


@dataclass(frozen=True)
class StreamStats:
    job_type: str
    length: int
    pending: int
    undelivered: int
    oldest_pending_age_seconds: float | None
    # The oldest request still in the stream (read or not), from enqueue to now.
    oldest_waiting_age_seconds: float | None = None
    # Per tenant: requests waiting and the oldest one's age (from at most STATS_SCAN entries).
    tenants: dict[str, TenantWaiting] = field(default_factory=dict)
    tenants_complete: bool = True


@dataclass(frozen=True)
class IntakeStats:
    streams: list[StreamStats]
    dead_letters: int

    def as_dict(self) -> dict:
        return {
            "streams": {
                s.job_type: {
                    **{k: v for k, v in vars(s).items() if k not in ("job_type", "tenants")},
                    "tenants": {t: vars(w) for t, w in sorted(s.tenants.items())},
                }
                for s in self.streams
            },
            "dead_letters": self.dead_letters,
        }


def redis_client(url: str, timeout_seconds: float = 10.0) -> redis.Redis:
    """The one way this project connects to Redis. Replies are decoded as UTF-8 with
    surrogateescape, so an entry holding other bytes is still read, and then rejected by
    validation, instead of failing every read of its stream."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        encoding_errors="surrogateescape",
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        health_check_interval=30,
    )


_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


# What the dead-letter script writes on every letter (lua/dead_letter.lua), besides the
# run_id and request_key that only some letters have a value for.
DEAD_LETTER_FIELDS = ("stream", "entry_id", "reason", "fields", "dead_lettered_at")


def letter_fields(letter: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """A dead letter's copy of its original entry's fields, and what is wrong with the
    letter (None: nothing). A letter not written by the intake (by hand, or by another
    program) may lack fields or hold something else: it is reported, never a crash."""
    missing = [name for name in DEAD_LETTER_FIELDS if name not in letter]
    problems = [f"missing {', '.join(missing)}"] if missing else []
    original: object = {}
    if "fields" in letter:
        try:
            original = json.loads(letter["fields"])
        except ValueError as exc:
            problems.append(f"'fields' is not JSON ({exc})")
            original = {}
    if not isinstance(original, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in original.items()
    ):
        problems.append("'fields' is not an object of strings")
        original = {}
    return original, "; ".join(problems) or None


def _tenant_of(raw_envelope: str | None) -> str:
    """The tenant an entry names, or '?' for one that will be rejected."""
    try:
        tenant = json.loads(raw_envelope or "").get("tenant_id")
    except (ValueError, AttributeError):
        return "?"
    # Only a tenant id the envelope would accept (payloads.Identifier): one read from bytes
    # that are not UTF-8 holds surrogates, which no JSON or metrics answer can encode.
    return tenant if isinstance(tenant, str) and _TENANT_ID.fullmatch(tenant) else "?"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def entry_id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream entry id ('<ms>-<seq>'): numeric, as Redis orders them."""
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def _entry_time(entry_id: str) -> float:
    return entry_id_key(entry_id)[0] / 1000


class IntakeStreams:
    """Producer and consumer operations on the intake, over one Redis client."""

    def __init__(self, client: redis.Redis, prefix: str = "qp"):
        # decode_responses keeps entry ids and fields as str throughout.
        self.client = client
        self.prefix = prefix
        self._dead_letter = client.register_script(_DEAD_LETTER_SCRIPT)
        self._settle = client.register_script(_SETTLE_SCRIPT)
        self._remember_request = client.register_script(_REMEMBER_REQUEST_SCRIPT)
        self._reopen_request = client.register_script(_REOPEN_REQUEST_SCRIPT)
        self._groups_ready: set[str] = set()

    # keys
    def stream_key(self, job_type: str) -> str:
        if job_type not in JOB_TYPES:
            raise ValueError(
                f"unknown job type {job_type!r}: expected one of {', '.join(JOB_TYPES)}"
            )
        return f"{self.prefix}:intake:{job_type}"

    @property
    def dead_letter_key(self) -> str:
        return f"{self.prefix}:dead-letter"

    def _waiting_key(self, request_key: str) -> str:
        return f"{self.prefix}:waiting:{request_key}"

    def request_record_key(self, request_key: str) -> str:
        """Hash {entry_id, digest}: the first entry written for a request key (the gateway
        writes it in the same script as the XADD, see gateway/once.py)."""
        return f"{self.prefix}:request:{request_key}"

    def remember_request(
        self,
        request_key: str,
        digest: str,
        entry_id: str,
        ttl_seconds: int = REQUEST_RECORD_SECONDS,
    ) -> FirstRequest:
        """Record `entry_id` and `digest` as the request key's first, unless a first is
        recorded already; return the first. A reader compares its own digest with it: a
        different one means the key was reused for a different request."""
        first_id, first_digest = self._remember_request(
            keys=[self.request_record_key(request_key)], args=[entry_id, digest, ttl_seconds]
        )
        return FirstRequest(first_id, first_digest)

    def reopen_request(self, request_key: str, digest: str, entry_id: str = "replay") -> bool:
        """Let a request that failed for good (or never ran) be worked again, as `digest`'s
        payload: forget its failed outcome and make `digest` the one its key stands for.
        False, changing nothing, when it succeeded: an entry for it is then acked."""
        reopened = self._reopen_request(
            keys=[self._outcome_key(request_key), self.request_record_key(request_key)],
            args=[digest, entry_id],
        )
        return bool(reopened)

    def _assigned_key(self, request_key: str) -> str:
        return f"{self.prefix}:assigned:{request_key}"

    def _outcome_key(self, request_key: str) -> str:
        return f"{self.prefix}:outcome:{request_key}"

    def _batch_key(self, batch_key: str) -> str:
        return f"{self.prefix}:batch:{batch_key}"

    def _inflight_key(self, job_type: str) -> str:
        return f"{self.prefix}:inflight:{job_type}"

    def _dead_letter_index_key(self, request_key: str) -> str:
        return f"{self.prefix}:dead-letter:request:{request_key}"

    def ensure_group(self, job_type: str) -> None:
        if job_type in self._groups_ready:
            return
        try:
            self.client.xgroup_create(self.stream_key(job_type), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups_ready.add(job_type)

    # producer side
    def enqueue(self, envelope: Envelope) -> str:
        """Append a validated envelope to its stream; returns the entry id."""
        return self.enqueue_many([envelope])[0]

    def enqueue_many(self, envelopes: Sequence[Envelope]) -> list[str]:
        for job_type in {e.type for e in envelopes}:
            self.ensure_group(job_type)
        pipe = self.client.pipeline(transaction=False)
        for envelope in envelopes:
            pipe.xadd(self.stream_key(envelope.type), {ENVELOPE_FIELD: envelope.to_wire()})
        return list(pipe.execute())

    # consumer side
    def read(self, job_type: str, after_id: str, count: int) -> list[IntakeEntry]:
        """Entries delivered to this consumer after `after_id` that are still pending (a tick
        that failed left them there), then never-delivered entries, `count` at most."""
        self.ensure_group(job_type)
        key = self.stream_key(job_type)
        entries = self._live_entries(
            job_type, self.client.xreadgroup(GROUP, CONSUMER, {key: after_id}, count=count)
        )
        if len(entries) < count:
            entries += self._live_entries(
                job_type,
                self.client.xreadgroup(GROUP, CONSUMER, {key: ">"}, count=count - len(entries)),
            )
        return entries

    def wait_for_new(self, job_type: str, timeout_seconds: float) -> bool:
        """Wait up to `timeout_seconds` for an entry never delivered to the consumer group;
        True once there is one. A blocking XREAD from the group's last-delivered id: it
        delivers nothing, so the next `read` still gets the entry."""
        self.ensure_group(job_type)
        key = self.stream_key(job_type)
        last = next(
            (g["last-delivered-id"] for g in self.client.xinfo_groups(key) if g["name"] == GROUP),
            "0-0",
        )
        block_ms = max(1, int(timeout_seconds * 1000))
        return bool(self.client.xread({key: last}, count=1, block=block_ms))

    def reclaim(
        self, job_type: str, min_idle_seconds: float, start_id: str, count: int
    ) -> tuple[str, list[IntakeEntry]]:
        """Claim pending entries idle for `min_idle_seconds` or more, scanning from `start_id`.
        Returns the id to continue from ('0-0' once the whole pending list was scanned)."""
        self.ensure_group(job_type)
        key = self.stream_key(job_type)
        reply = self.client.xautoclaim(
            key, GROUP, CONSUMER, int(min_idle_seconds * 1000), start_id=start_id, count=count
        )
        # Redis 7 drops pending entries that were deleted from the stream and lists their ids
        # in reply[2]; Redis 6.2 returns each as a nil entry with no id at all.
        claimed = [item for item in reply[1] if item is not None and item[0] is not None]
        return reply[0], self._live_entries(job_type, [(key, claimed)])

    def _live_entries(self, job_type: str, reply) -> list[IntakeEntry]:
        """Entries with their fields; pending entries deleted from the stream meanwhile (by an
        operator's XDEL or a producer's MAXLEN) have nothing left to deliver and are acked."""
        if not reply:
            return []
        _stream, items = reply[0]
        # An entry always has a field (XADD requires one), so no fields means deleted.
        gone = [entry_id for entry_id, fields in items if not fields]
        if gone:
            self.client.xack(self.stream_key(job_type), GROUP, *gone)
        return [IntakeEntry(job_type, entry_id, fields) for entry_id, fields in items if fields]

    def track(self, job_type: str, request_key: str, entry_ids: Iterable[str]) -> None:
        """Remember which entries carry a request, so settling the request settles them all."""
        ids = list(entry_ids)
        if ids:
            self.client.sadd(self._waiting_key(request_key), *ids)

    def waiting_entries(self, request_key: str, scan_limit: int = 10_000) -> list[str]:
        """The entries that carry a request and are still on the intake: those a sensor tick
        has seen, and those not yet read (found by scanning up to `scan_limit` entries)."""
        found = set(self.client.smembers(self._waiting_key(request_key)))
        job_type, tenant_id, idempotency_key = request_key.split(":", 2)
        if job_type in JOB_TYPES:
            start, seen = "-", 0
            while seen < scan_limit:
                batch = self.client.xrange(self.stream_key(job_type), start, "+", count=1000)
                for entry_id, fields in batch:
                    try:
                        envelope = json.loads(fields.get(ENVELOPE_FIELD) or "{}")
                    except ValueError:
                        continue
                    if isinstance(envelope, dict) and (
                        envelope.get("tenant_id"),
                        envelope.get("idempotency_key"),
                    ) == (tenant_id, idempotency_key):
                        found.add(entry_id)
                seen += len(batch)
                if len(batch) < 1000:
                    break
                start = "(" + batch[-1][0]
        return sorted(found, key=entry_id_key)

    def settle(self, job_type: str, request_key: str) -> int:
        """The request's run succeeded: ack and delete every entry that carried it, and remove
        the dead letters an earlier failure of the same request left."""
        settled = int(
            self._settle(
                keys=[self.stream_key(job_type), self._waiting_key(request_key)], args=[GROUP]
            )
        )
        self.resolve_dead_letters(job_type, request_key)
        return settled

    def ack(self, job_type: str, entry_ids: Sequence[str], request_key: str = "") -> int:
        """Ack and delete specific entries (a duplicate whose request already succeeded)."""
        if not entry_ids:
            return 0
        key = self.stream_key(job_type)
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(key, GROUP, *entry_ids)
        pipe.xdel(key, *entry_ids)
        if request_key:
            pipe.srem(self._waiting_key(request_key), *entry_ids)
        acked = int(pipe.execute()[0])
        if request_key:
            self.resolve_dead_letters(job_type, request_key)
        return acked

    def resolve_dead_letters(self, job_type: str, request_key: str) -> int:
        """The request succeeded after all (re-executed, replayed, retried): remove the dead
        letters of it, which would otherwise stay listed as if it had failed. Returns how many
        were removed. Only dead letters of `job_type`'s stream are touched."""
        index = self._dead_letter_index_key(request_key)
        ids = sorted(self.client.smembers(index), key=entry_id_key)
        if not ids:
            return 0
        stream = self.stream_key(job_type)
        mine = [
            letter_id
            for letter_id, fields in (
                (letter_id, self.client.xrange(self.dead_letter_key, letter_id, letter_id))
                for letter_id in ids
            )
            if not fields or fields[0][1].get("stream") == stream
        ]
        pipe = self.client.pipeline(transaction=True)
        if mine:
            pipe.xdel(self.dead_letter_key, *mine)
            pipe.srem(index, *mine)
        results = pipe.execute()
        return int(results[0]) if mine else 0

    def dead_letter(
        self,
        job_type: str,
        entry_ids: Sequence[str],
        reason: str,
        run_id: str = "",
        request_key: str = "",
    ) -> int:
        """Move entries to the dead-letter stream with `reason`, keeping their fields."""
        if not entry_ids:
            return 0
        return int(
            self._dead_letter(
                keys=[
                    self.stream_key(job_type),
                    self.dead_letter_key,
                    self._waiting_key(request_key),
                    self._dead_letter_index_key(request_key),
                ],
                args=[_now_iso(), reason, run_id, GROUP, request_key, *entry_ids],
            )
        )

    def dead_letter_request(self, job_type: str, request_key: str, reason: str, run_id: str) -> int:
        """The request's run failed for good: dead-letter every entry that carried it."""
        ids = sorted(self.client.smembers(self._waiting_key(request_key)), key=entry_id_key)
        return self.dead_letter(job_type, ids, reason, run_id=run_id, request_key=request_key)

    # batches
    def assign_batch(
        self, job_type: str, batch_key: str, batch: dict, attempts: dict[str, int]
    ) -> None:
        """Record a batch before its run is requested: its requests are then in flight in it
        (`attempts`: request key -> attempt), and a tick that fails after this point requests
        the same run again instead of batching them anew."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._batch_key(batch_key), json.dumps(batch))
        pipe.sadd(self._inflight_key(job_type), batch_key)
        for request_key, attempt in attempts.items():
            pipe.hset(
                self._assigned_key(request_key),
                mapping={"batch": batch_key, "attempt": attempt},
            )
        pipe.execute()

    def inflight_batches(self, job_type: str) -> list[str]:
        return sorted(self.client.smembers(self._inflight_key(job_type)))

    def batch(self, batch_key: str) -> dict | None:
        raw = self.client.get(self._batch_key(batch_key))
        return json.loads(raw) if raw else None

    def finish_batch(self, job_type: str, batch_key: str, request_keys: Sequence[str]) -> None:
        """The batch's run has ended and each of its requests is settled or batched again."""
        pipe = self.client.pipeline(transaction=True)
        for request_key in request_keys:
            # Only where the request is still assigned to this batch (not to a newer one).
            pipe.hget(self._assigned_key(request_key), "batch")
        current = pipe.execute()
        pipe = self.client.pipeline(transaction=True)
        for request_key, assigned_to in zip(request_keys, current, strict=True):
            if assigned_to == batch_key:
                pipe.delete(self._assigned_key(request_key))
        pipe.delete(self._batch_key(batch_key))
        pipe.srem(self._inflight_key(job_type), batch_key)
        pipe.execute()

    def assignments(self, request_keys: Sequence[str]) -> dict[str, Assignment]:
        pipe = self.client.pipeline(transaction=False)
        for request_key in request_keys:
            pipe.hgetall(self._assigned_key(request_key))
        return {
            request_key: Assignment(found["batch"], int(found["attempt"]))
            for request_key, found in zip(request_keys, pipe.execute(), strict=True)
            if found
        }

    def outcomes(self, request_keys: Sequence[str]) -> dict[str, Outcome]:
        pipe = self.client.pipeline(transaction=False)
        for request_key in request_keys:
            pipe.hgetall(self._outcome_key(request_key))
        return {
            request_key: Outcome(found["status"], found.get("reason", ""), found.get("run_id", ""))
            for request_key, found in zip(request_keys, pipe.execute(), strict=True)
            if found
        }

    def _record_outcome(self, request_key: str, outcome: Outcome) -> None:
        key = self._outcome_key(request_key)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping={**vars(outcome), "at": _now_iso()})
        pipe.expire(key, OUTCOME_TTL_SECONDS)
        pipe.execute()

    def request_succeeded(self, job_type: str, request_key: str, run_id: str) -> int:
        """Record the success first, then ack the request's entries: a crash in between
        leaves entries that the next tick acks on sight of the outcome."""
        self._record_outcome(request_key, Outcome(SUCCEEDED, run_id=run_id))
        return self.settle(job_type, request_key)

    def request_failed(self, job_type: str, request_key: str, reason: str, run_id: str) -> int:
        """The request failed for good: record why, then dead-letter its entries."""
        self._record_outcome(request_key, Outcome(FAILED, reason, run_id))
        return self.dead_letter_request(job_type, request_key, reason, run_id)

    # operators
    def dead_letters(self, count: int = 100) -> list[dict]:
        """The newest dead letters first, each with its original fields decoded; a letter
        whose fields cannot be (not written by the intake) has `malformed` saying why."""
        items = self.client.xrevrange(self.dead_letter_key, count=count)
        letters = []
        for letter_id, fields in items:
            letter = dict(fields)
            letter["id"] = letter_id
            letter["fields"], problem = letter_fields(fields)
            if problem:
                letter["malformed"] = problem
            letters.append(letter)
        return letters

    def stats(self, scan_limit: int = STATS_SCAN) -> IntakeStats:
        now = time.time()
        streams = []
        for job_type in JOB_TYPES:
            key = self.stream_key(job_type)
            length = self.client.xlen(key)
            pending, oldest, oldest_waiting = 0, None, None
            tenants: dict[str, TenantWaiting] = {}
            complete = True
            if length:
                try:
                    summary = self.client.xpending(key, GROUP)
                except redis.ResponseError:  # no group yet: nothing was ever read
                    summary = {"pending": 0}
                pending = summary["pending"]
                if pending:
                    oldest = round(now - _entry_time(summary["min"]), 3)
                tenants, complete = self._waiting_by_tenant(key, now, scan_limit)
                first = self.client.xrange(key, count=1)
                if first:
                    oldest_waiting = round(now - _entry_time(first[0][0]), 3)
            streams.append(
                StreamStats(
                    job_type,
                    length,
                    pending,
                    length - pending,
                    oldest,
                    oldest_waiting,
                    tenants,
                    complete,
                )
            )
        return IntakeStats(streams, self.client.xlen(self.dead_letter_key))

    def _waiting_by_tenant(
        self, key: str, now: float, scan_limit: int
    ) -> tuple[dict[str, TenantWaiting], bool]:
        """Entries oldest first, so a tenant's first entry seen is its oldest."""
        counts: dict[str, int] = {}
        oldest: dict[str, float] = {}
        start, seen = "-", 0
        while seen < scan_limit:
            page = self.client.xrange(key, min=start, count=min(1000, scan_limit - seen))
            if not page:
                break
            for entry_id, fields in page:
                tenant = _tenant_of(fields.get(ENVELOPE_FIELD))
                counts[tenant] = counts.get(tenant, 0) + 1
                oldest.setdefault(tenant, round(now - _entry_time(entry_id), 3))
            seen += len(page)
            start = "(" + page[-1][0]
        complete = seen < scan_limit or not self.client.xrange(key, min=start, count=1)
        return {t: TenantWaiting(counts[t], oldest[t]) for t in counts}, complete
