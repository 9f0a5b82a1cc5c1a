"""What the intake remembers per request key (type, tenant, idempotency key) rather than per
entry: the first entry written for it and its payload digest, how it ended, and which entries
carry it. A key may be written many times (client retries, Stripe redeliveries, duplicates);
these records make all of them one request."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from queue_pipelines.intake.entries import ENVELOPE_FIELD, entry_id_key
from queue_pipelines.intake.keys import IntakeKeys
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.intake.scripts import IntakeScripts

# Stripe retries an unacknowledged event for up to three days; clients retry for less.
REQUEST_RECORD_SECONDS = 3 * 24 * 3600
# Long enough for any duplicate a producer may still send; the effect ledger stays the
# guarantee after that (a duplicate then runs, and replays the recorded effect).
OUTCOME_TTL_SECONDS = 7 * 24 * 3600
SUCCEEDED = "succeeded"
FAILED = "failed"


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
class Enqueued:
    entry_id: str
    request_key: str
    duplicate: bool  # True: an earlier request with this key made the entry
    conflict: bool = False  # True: that earlier request had a different payload


@dataclass(frozen=True)
class Outcome:
    """How a request ended: `succeeded`, or `failed` for good with `reason`."""

    status: str
    reason: str = ""
    run_id: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    def as_fields(self) -> dict[str, str]:
        """The outcome hash's fields, stamped with now (`at`, which the bench and `request
        show` read)."""
        return {**vars(self), "at": datetime.now(UTC).isoformat()}


class RequestRecords:
    def __init__(self, client: redis.Redis, keys: IntakeKeys, scripts: IntakeScripts):
        self.client = client
        self.keys = keys
        self.scripts = scripts

    # the first request of a key
    def enqueue_once(
        self, envelope: Envelope, wire: str, digest: str, remember_seconds: int
    ) -> Enqueued:
        """XADD `wire` unless the request key has a first entry already, in one script, so
        that two concurrent requests with one key cannot both enqueue. The caller made sure
        the stream's consumer group exists."""
        request_key = envelope.request_key
        entry_id, created, first_digest = self.scripts.enqueue_once(
            keys=[self.keys.stream(envelope.type), self.keys.request_record(request_key)],
            args=[ENVELOPE_FIELD, wire, remember_seconds, digest],
        )
        return Enqueued(
            entry_id,
            request_key,
            duplicate=not created,
            conflict=bool(not created and first_digest != digest),
        )

    def remember(
        self, firsts: Sequence[tuple[str, str, str]], ttl_seconds: int
    ) -> dict[str, FirstRequest]:
        """remember_request.lua for each (request key, digest, entry id), in one pipeline."""
        pipe = self.client.pipeline(transaction=False)
        for request_key, digest, entry_id in firsts:
            self.scripts.remember_request(
                keys=[self.keys.request_record(request_key)],
                args=[entry_id, digest, ttl_seconds],
                client=pipe,
            )
        return {
            request_key: FirstRequest(first_id, first_digest)
            for (request_key, _, _), (first_id, first_digest) in zip(
                firsts, pipe.execute(), strict=True
            )
        }

    def is_recorded(self, request_key: str) -> bool:
        return bool(self.client.exists(self.keys.request_record(request_key)))

    def reopen(self, request_key: str, digest: str, entry_id: str) -> bool:
        reopened = self.scripts.reopen_request(
            keys=[self.keys.outcome(request_key), self.keys.request_record(request_key)],
            args=[digest, entry_id],
        )
        return bool(reopened)

    # how requests ended
    def outcomes(self, request_keys: Sequence[str]) -> dict[str, Outcome]:
        pipe = self.client.pipeline(transaction=False)
        for request_key in request_keys:
            pipe.hgetall(self.keys.outcome(request_key))
        return {
            request_key: Outcome(found["status"], found.get("reason", ""), found.get("run_id", ""))
            for request_key, found in zip(request_keys, pipe.execute(), strict=True)
            if found
        }

    def record_outcome(self, request_key: str, outcome: Outcome) -> None:
        key = self.keys.outcome(request_key)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping=outcome.as_fields())
        pipe.expire(key, OUTCOME_TTL_SECONDS)
        pipe.execute()

    # the entries that carry a request
    def track(self, entries: Mapping[str, Iterable[str]]) -> None:
        """Add entry ids to their requests' waiting sets (request key -> ids), in one pipeline."""
        pipe = self.client.pipeline(transaction=False)
        for request_key, entry_ids in entries.items():
            if ids := list(entry_ids):
                pipe.sadd(self.keys.waiting(request_key), *ids)
        pipe.execute()

    def tracked(self, request_key: str) -> list[str]:
        """The entries a tick has seen carry the request and that are not settled, oldest
        first."""
        return sorted(self.client.smembers(self.keys.waiting(request_key)), key=entry_id_key)
