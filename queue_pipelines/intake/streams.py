"""IntakeStreams: the one owner of the intake's Redis use. Producers, the gateway, the intake
sensor, the run workers, the metrics and the operators' commands all go through it; its parts
each do one job:

    keys.py                every key, spelled once
    connection.py          the one Redis client configuration (`redis_client`)
    scripts.py, lua/       the Lua scripts, loaded through one loader
    entries.py             the streams: XADD, XREADGROUP, XAUTOCLAIM, consumer group
    request_records.py     per request key: first entry and digest, outcome, its entries
    inflight.py            batches in flight and their requests' assignments
    dead_letter_stream.py  the dead-letter stream and its index by request
    stats.py               what waits, for `queue stats` and the metrics

An entry stays in its stream, pending in the group, until the request it carries is settled:
acked and deleted once its run succeeded, or moved to the dead-letter stream with a reason.
Entries are tracked per request key (job type, tenant, idempotency key) rather than per run,
so one run may settle many entries (duplicates, and the requests of a micro-batch). What
spans parts (settling a request, acking a duplicate) is done here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

import redis

from queue_pipelines.intake.connection import redis_client
from queue_pipelines.intake.dead_letter_stream import (
    DEAD_LETTER_FIELDS,
    DeadLetterStream,
    RawLetter,
    letter_fields,
)
from queue_pipelines.intake.entries import (
    CONSUMER,
    ENVELOPE_FIELD,
    GROUP,
    EntryStreams,
    IntakeEntry,
    entry_id_key,
)
from queue_pipelines.intake.inflight import Assignment, InflightBatches
from queue_pipelines.intake.keys import DEFAULT_PREFIX, IntakeKeys
from queue_pipelines.intake.registry import JOB_TYPES
from queue_pipelines.intake.request_records import (
    FAILED,
    OUTCOME_TTL_SECONDS,
    REQUEST_RECORD_SECONDS,
    SUCCEEDED,
    Enqueued,
    FirstRequest,
    Outcome,
    RequestRecords,
    request_digest,
)
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.intake.scripts import IntakeScripts
from queue_pipelines.intake.stats import STATS_SCAN, IntakeStats, intake_stats

# The facade's vocabulary, importable from here as before the split.
__all__ = [
    "CONSUMER",
    "DEAD_LETTER_FIELDS",
    "ENVELOPE_FIELD",
    "FAILED",
    "GROUP",
    "OUTCOME_TTL_SECONDS",
    "REQUEST_RECORD_SECONDS",
    "SUCCEEDED",
    "Assignment",
    "Enqueued",
    "FirstRequest",
    "IntakeEntry",
    "IntakeStreams",
    "Outcome",
    "entry_id_key",
    "letter_fields",
    "redis_client",
    "request_digest",
]


class IntakeStreams:
    """Producer, consumer and operator operations on the intake, over one Redis client."""

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX):
        # decode_responses keeps entry ids and fields as str throughout.
        self.client = client
        self.prefix = prefix
        self.keys = IntakeKeys(prefix)
        self.scripts = IntakeScripts.register(client)
        self.entries = EntryStreams(client, self.keys)
        self.requests = RequestRecords(client, self.keys, self.scripts)
        self.inflight = InflightBatches(client, self.keys, self.scripts)
        self.letters = DeadLetterStream(client, self.keys, self.scripts)

    # keys (public: producers in any language write the streams)
    def stream_key(self, job_type: str) -> str:
        return self.keys.stream(job_type)

    @property
    def dead_letter_key(self) -> str:
        return self.keys.dead_letters

    def request_record_key(self, request_key: str) -> str:
        """Hash {entry_id, digest}: the first entry written for a request key."""
        return self.keys.request_record(request_key)

    def ensure_group(self, job_type: str) -> None:
        self.entries.ensure_group(job_type)

    # producers
    def enqueue(self, envelope: Envelope) -> str:
        """Append a validated envelope to its stream; returns the entry id."""
        return self.enqueue_many([envelope])[0]

    def enqueue_many(self, envelopes: Sequence[Envelope]) -> list[str]:
        return self.entries.add([(envelope.type, envelope.to_wire()) for envelope in envelopes])

    def enqueue_once(
        self, envelope: Envelope, remember_seconds: int = REQUEST_RECORD_SECONDS
    ) -> Enqueued:
        """Enqueue at most once per request key (the gateway: HTTP clients retry after
        timeouts, and Stripe redelivers events). A repeat is answered with the entry the
        first request made; a repeat whose payload differs from the first is a conflict (the
        gateway answers 409), not a duplicate. Entries other producers write straight to Redis
        meet the same record at the intake sensor (`remember_request`)."""
        wire = envelope.to_wire()  # EnvelopeError over the size limit, before any write
        self.entries.ensure_group(envelope.type)
        return self.requests.enqueue_once(
            envelope, wire, request_digest(envelope), remember_seconds
        )

    def request_recorded(self, request_key: str) -> bool:
        """Whether a first entry is recorded for the request key (a repeat would be answered
        with it)."""
        return self.requests.is_recorded(request_key)

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
        return self.remember_requests([(request_key, digest, entry_id)], ttl_seconds)[request_key]

    def remember_requests(
        self, firsts: Sequence[tuple[str, str, str]], ttl_seconds: int = REQUEST_RECORD_SECONDS
    ) -> dict[str, FirstRequest]:
        """`remember_request` for each (request key, digest, entry id), many keys a script
        call, in one round trip: a tick's first sight of a thousand requests is two commands,
        not a thousand."""
        return self.requests.remember(firsts, ttl_seconds)

    def reopen_request(self, request_key: str, digest: str, entry_id: str = "replay") -> bool:
        """Let a request that failed for good (or never ran) be worked again, as `digest`'s
        payload: forget its failed outcome and make `digest` the one its key stands for.
        False, changing nothing, when it succeeded: an entry for it is then acked."""
        return self.requests.reopen(request_key, digest, entry_id)

    # the intake sensor
    def read(self, job_type: str, after_id: str, count: int) -> list[IntakeEntry]:
        return self.entries.read(job_type, after_id, count)

    def wait_for_new(self, job_type: str, timeout_seconds: float) -> bool:
        return self.entries.wait_for_new(job_type, timeout_seconds)

    def reclaim(
        self, job_type: str, min_idle_seconds: float, start_id: str, count: int
    ) -> tuple[str, list[IntakeEntry]]:
        return self.entries.reclaim(job_type, min_idle_seconds, start_id, count)

    def track(self, job_type: str, request_key: str, entry_ids: Iterable[str]) -> None:
        """Remember which entries carry a request, so settling the request settles them all."""
        self.track_all(job_type, {request_key: entry_ids})

    def track_all(self, job_type: str, entries: Mapping[str, Iterable[str]]) -> None:
        """`track` for many requests (request key -> entry ids), many keys a script call, in
        one round trip."""
        self.requests.track(entries)

    def waiting_entries(self, request_key: str, scan_limit: int = 10_000) -> list[str]:
        """The entries that carry a request and are still on the intake: those a sensor tick
        has seen, and those not yet read (found by scanning up to `scan_limit` entries)."""
        found = set(self.requests.tracked(request_key))
        job_type, tenant_id, idempotency_key = request_key.split(":", 2)

        def carries(entry_id: str, fields: dict[str, str]) -> None:
            try:
                envelope = json.loads(fields.get(ENVELOPE_FIELD) or "{}")
            except ValueError:
                return
            if isinstance(envelope, dict) and (
                envelope.get("tenant_id"),
                envelope.get("idempotency_key"),
            ) == (tenant_id, idempotency_key):
                found.add(entry_id)

        if job_type in JOB_TYPES:
            self.entries.scan(job_type, scan_limit, carries)
        return sorted(found, key=entry_id_key)

    def settle(self, job_type: str, request_key: str) -> int:
        """The request's run succeeded: ack and delete every entry that carried it, and remove
        the dead letters an earlier failure of the same request left."""
        return int(self._settle(self.client, job_type, request_key))

    def settle_all(self, job_type: str, request_keys: Sequence[str]) -> int:
        """`settle` for many requests in one pipeline (a tick settling a batch whose run
        ended); returns how many entries were settled."""
        pipe = self.client.pipeline(transaction=False)
        for request_key in request_keys:
            self._settle(pipe, job_type, request_key)
        return sum(int(settled) for settled in pipe.execute())

    def _settle(
        self, client: redis.Redis, job_type: str, request_key: str, outcome: Outcome | None = None
    ):
        """settle.lua on `client` (a pipeline queues it), recording `outcome` first if given."""
        fields = [part for pair in outcome.as_fields().items() for part in pair] if outcome else []
        return self.scripts.settle(
            keys=[
                self.keys.stream(job_type),
                self.keys.waiting(request_key),
                self.keys.outcome(request_key),
                self.keys.dead_letter_index(request_key),
                self.keys.dead_letters,
            ],
            args=[GROUP, OUTCOME_TTL_SECONDS, *fields],
            client=client,
        )

    def ack(self, job_type: str, entry_ids: Sequence[str], request_key: str = "") -> int:
        """Ack and delete specific entries (a duplicate whose request already succeeded)."""
        if not entry_ids:
            return 0
        key = self.keys.stream(job_type)
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(key, GROUP, *entry_ids)
        pipe.xdel(key, *entry_ids)
        if request_key:
            pipe.srem(self.keys.waiting(request_key), *entry_ids)
        acked = int(pipe.execute()[0])
        if request_key:
            self.resolve_dead_letters(job_type, request_key)
        return acked

    def dead_letter(
        self,
        job_type: str,
        entry_ids: Sequence[str],
        reason: str,
        run_id: str = "",
        request_key: str = "",
    ) -> int:
        """Move entries to the dead-letter stream with `reason`, keeping their fields."""
        return self.letters.move(job_type, entry_ids, reason, run_id, request_key)

    def dead_letter_request(self, job_type: str, request_key: str, reason: str, run_id: str) -> int:
        """The request's run failed for good: dead-letter every entry that carried it."""
        ids = self.requests.tracked(request_key)
        return self.dead_letter(job_type, ids, reason, run_id=run_id, request_key=request_key)

    def dead_letter_notice(self, envelope: dict, reason: str, run_id: str) -> str:
        """A notice that failed for good after its effect, as the `notification` request that
        would send it again (`envelope`, a dict: what failed may not even validate). An
        operator replays it (`dlq replay`, with `--payload` to fix it); its success removes
        the letter."""
        request_key = ":".join(
            str(envelope.get(part, "")) for part in ("type", "tenant_id", "idempotency_key")
        )
        return self.letters.add(
            envelope.get("type", "notification"),
            request_key,
            reason,
            run_id,
            {"envelope": json.dumps(envelope, default=str)},
        )

    def resolve_dead_letters(self, job_type: str, request_key: str) -> int:
        """The request succeeded after all (re-executed, replayed, retried): remove the dead
        letters of it, which would otherwise stay listed as if it had failed. Returns how many
        were removed. Only dead letters of `job_type`'s stream are touched."""
        return self.letters.resolve(job_type, request_key)

    # batches in flight
    def assign_batch(
        self, job_type: str, batch_key: str, batch: dict, attempts: dict[str, int]
    ) -> None:
        """Record a batch before its run is requested: its requests are then in flight in it
        (`attempts`: request key -> attempt), and a tick that fails after this point requests
        the same run again instead of batching them anew."""
        self.inflight.assign(job_type, batch_key, batch, attempts)

    def inflight_batches(self, job_type: str) -> list[str]:
        return self.inflight.batch_keys(job_type)

    def batch(self, batch_key: str) -> dict | None:
        return self.inflight.batch(batch_key)

    def finish_batch(self, job_type: str, batch_key: str, request_keys: Sequence[str]) -> None:
        """The batch's run has ended and each of its requests is settled or batched again."""
        self.inflight.finish(job_type, batch_key, request_keys)

    def assignments(self, request_keys: Sequence[str]) -> dict[str, Assignment]:
        return self.inflight.assignments(request_keys)

    def entry_on_intake(self, job_type: str, entry_id: str) -> bool:
        """Whether the entry is still on its stream: settling a request (acked, or moved to
        the dead letters) deletes its entries."""
        return bool(self.client.xrange(self.stream_key(job_type), entry_id, entry_id, count=1))

    # outcomes (the run workers)
    def outcomes(self, request_keys: Sequence[str]) -> dict[str, Outcome]:
        return self.requests.outcomes(request_keys)

    def request_succeeded(self, job_type: str, request_key: str, run_id: str) -> int:
        """Record the success, ack the request's entries and remove its dead letters, in one
        script: one round trip per request, and nothing of it can be half done."""
        return int(
            self._settle(self.client, job_type, request_key, Outcome(SUCCEEDED, run_id=run_id))
        )

    def request_failed(self, job_type: str, request_key: str, reason: str, run_id: str) -> int:
        """The request failed for good: record why, then dead-letter its entries."""
        self.requests.record_outcome(request_key, Outcome(FAILED, reason, run_id))
        return self.dead_letter_request(job_type, request_key, reason, run_id)

    # operators
    def dead_letters(self, count: int = 100) -> list[dict]:
        """The newest dead letters first, each with its original fields decoded; a letter
        whose fields cannot be (not written by the intake) has `malformed` saying why."""
        return self.letters.newest(count)

    def dead_letter_page(self, before: str = "+", count: int = 500) -> list[RawLetter]:
        """Dead letters as stored, newest first, from id `before` (inclusive) down."""
        return self.letters.page(before, count)

    def dead_letter_of_entry(self, job_type: str, entry_id: str) -> RawLetter | None:
        """The dead letter the entry became, if it did."""
        return self.letters.of_entry(job_type, entry_id)

    def dead_letter_by_id(self, letter_id: str) -> RawLetter | None:
        return self.letters.get(letter_id)

    def remove_dead_letters(self, letters: Sequence[tuple[str, str]]) -> int:
        """Delete dead letters, given as (letter id, request key or '')."""
        return self.letters.remove(letters)

    def stats(self, scan_limit: int = STATS_SCAN) -> IntakeStats:
        return intake_stats(self.entries, self.letters, scan_limit)
