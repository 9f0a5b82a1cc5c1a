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
from typing import Any

import redis

from queue_pipelines.intake.entries import ENVELOPE_FIELD, entry_id_key
from queue_pipelines.intake.keys import IntakeKeys
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.intake.scripts import IntakeScripts, call_per_keys, read_fields

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
        """remember_request.lua for each (request key, digest, entry id): many keys a call."""
        if not firsts:
            return {}
        replies = call_per_keys(
            self.client,
            self.scripts.remember_request,
            [self.keys.request_record(request_key) for request_key, _, _ in firsts],
            lambda start, stop: [
                ttl_seconds,
                *(
                    part
                    for _, digest, entry_id in firsts[start:stop]
                    for part in (entry_id, digest)
                ),
            ],
        )
        flat = [value for reply in replies for value in reply]
        return {
            request_key: FirstRequest(flat[2 * i], flat[2 * i + 1])
            for i, (request_key, _, _) in enumerate(firsts)
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
        """The recorded outcome of each of `request_keys` that has one: many keys a call."""
        fields = ("status", "reason", "run_id")
        found = read_fields(
            self.client, self.scripts, [self.keys.outcome(key) for key in request_keys], fields
        )
        return {
            request_key: Outcome(status, reason or "", run_id or "")
            for request_key, (status, reason, run_id) in zip(request_keys, found, strict=True)
            if status is not None
        }

    def record_outcome(self, request_key: str, outcome: Outcome) -> None:
        key = self.keys.outcome(request_key)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping=outcome.as_fields())
        pipe.expire(key, OUTCOME_TTL_SECONDS)
        pipe.execute()

    # the entries that carry a request
    def track(self, entries: Mapping[str, Iterable[str]]) -> None:
        """Add entry ids to their requests' waiting sets (request key -> ids): many keys a
        call."""
        ids = {request_key: list(entry_ids) for request_key, entry_ids in entries.items()}
        keys = [request_key for request_key, these in ids.items() if these]
        if not keys:
            return

        def args(start: int, stop: int) -> list[Any]:
            chunk = keys[start:stop]
            return [*(len(ids[key]) for key in chunk), *(i for key in chunk for i in ids[key])]

        call_per_keys(
            self.client, self.scripts.track, [self.keys.waiting(key) for key in keys], args
        )

    def tracked(self, request_key: str) -> list[str]:
        """The entries a tick has seen carry the request and that are not settled, oldest
        first."""
        return sorted(self.client.smembers(self.keys.waiting(request_key)), key=entry_id_key)
