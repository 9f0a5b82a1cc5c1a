"""Enqueue at most once per request key, at the gateway.

HTTP clients retry after timeouts, and Stripe redelivers events; the gateway answers a repeat
with the entry the first request made instead of writing another one. The key -> (entry id,
payload digest) record (IntakeStreams.request_record_key) and the XADD happen in one Lua
script, so two concurrent requests with one key cannot both enqueue; a repeat whose payload
differs from the first is a conflict (answered 409), not a duplicate. Entries other producers
write straight to Redis meet the same record at the intake sensor, which dead-letters a
conflicting one (docs/intake.md, "Idempotency").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from queue_pipelines.intake.schema import Envelope
from queue_pipelines.intake.streams import (
    ENVELOPE_FIELD,
    REQUEST_RECORD_SECONDS,
    IntakeStreams,
    request_digest,
)

DEFAULT_REMEMBER_SECONDS = REQUEST_RECORD_SECONDS

# The same record as IntakeStreams.remember_request, written with the XADD.
_ENQUEUE_ONCE_SCRIPT = (Path(__file__).parent / "enqueue_once.lua").read_text()


@dataclass(frozen=True)
class Enqueued:
    entry_id: str
    request_key: str
    duplicate: bool  # True: an earlier request with this key made the entry
    conflict: bool = False  # True: that earlier request had a different payload


class EnqueueOnce:
    def __init__(self, streams: IntakeStreams, remember_seconds: int = DEFAULT_REMEMBER_SECONDS):
        self.streams = streams
        self.remember_seconds = remember_seconds
        self._script = streams.client.register_script(_ENQUEUE_ONCE_SCRIPT)

    def seen_key(self, request_key: str) -> str:
        return self.streams.request_record_key(request_key)

    def enqueue(self, envelope: Envelope) -> Enqueued:
        wire = envelope.to_wire()  # EnvelopeError over the size limit, before any write
        digest = request_digest(envelope)
        self.streams.ensure_group(envelope.type)
        entry_id, created, first_digest = self._script(
            keys=[self.streams.stream_key(envelope.type), self.seen_key(envelope.request_key)],
            args=[ENVELOPE_FIELD, wire, self.remember_seconds, digest],
        )
        return Enqueued(
            entry_id,
            envelope.request_key,
            duplicate=not created,
            conflict=bool(not created and first_digest != digest),
        )
