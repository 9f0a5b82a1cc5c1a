"""Enqueue at most once per request key, at the gateway.

HTTP clients retry after timeouts, and Stripe redelivers events; the gateway answers a repeat
with the entry the first request made instead of writing another one. The key -> entry id
record and the XADD happen in one Lua script, so two concurrent requests with one key cannot
both enqueue. Other producers writing straight to Redis are not affected: for them the intake
sensor's run key remains the guard (docs/intake.md, "Idempotency").
"""

from __future__ import annotations

from dataclasses import dataclass

from queue_pipelines.intake.schema import Envelope
from queue_pipelines.intake.streams import ENVELOPE_FIELD, IntakeStreams

# Stripe retries an unacknowledged event for up to three days; clients retry for less.
DEFAULT_REMEMBER_SECONDS = 3 * 24 * 3600

_ENQUEUE_ONCE_SCRIPT = """
local existing = redis.call('GET', KEYS[2])
if existing then return {existing, 0} end
local id = redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], id, 'EX', tonumber(ARGV[3]))
return {id, 1}
"""


@dataclass(frozen=True)
class Enqueued:
    entry_id: str
    request_key: str
    duplicate: bool  # True: an earlier request with this key made the entry


class EnqueueOnce:
    def __init__(self, streams: IntakeStreams, remember_seconds: int = DEFAULT_REMEMBER_SECONDS):
        self.streams = streams
        self.remember_seconds = remember_seconds
        self._script = streams.client.register_script(_ENQUEUE_ONCE_SCRIPT)

    def seen_key(self, request_key: str) -> str:
        return f"{self.streams.prefix}:gateway:seen:{request_key}"

    def enqueue(self, envelope: Envelope) -> Enqueued:
        self.streams.ensure_group(envelope.type)
        entry_id, created = self._script(
            keys=[self.streams.stream_key(envelope.type), self.seen_key(envelope.request_key)],
            args=[ENVELOPE_FIELD, envelope.to_wire(), self.remember_seconds],
        )
        return Enqueued(entry_id, envelope.request_key, duplicate=not created)
