"""Every Redis key this project writes, spelled once. All of them start with the prefix
(QUEUE_KEY_PREFIX, `qp` by default), so that two deployments can share one Redis.

    <prefix>:intake:<job type>                  stream: the job requests (public: producers XADD)
    <prefix>:dead-letter                        stream: rejected and failed entries, with reasons
    <prefix>:dead-letter:request:<request key>  set: the dead letters of one request
    <prefix>:request:<request key>              hash {entry_id, digest}: a request's first
                                                entry and payload digest (kept 3 days)
    <prefix>:outcome:<request key>              hash: how a request ended (kept 7 days)
    <prefix>:waiting:<request key>              set: the entries that carry a request
    <prefix>:assigned:<request key>             hash {batch, attempt}: the batch it is in
    <prefix>:batch:<batch key>                  string: a batch in flight, as JSON
    <prefix>:inflight:<job type>                set: batches whose run has not been seen to end
    <prefix>:lock:refund:<payment intent>       lock: one refund of a PaymentIntent at a time
    <prefix>:lock:transfer:<mint>               lock: one transfer of a ticket at a time
    <prefix>:limits...                          the `limits` library's rate-limit windows
                                                (providers and the gateway's tenants)
    <prefix>:breaker:<provider>                 hash: a provider's circuit breaker
    <prefix>:quota:email:<tenant>:<UTC day>     counter: a tenant's notifications that day
    <prefix>:counts:dead-letters                hash "<job type>/<class>": dead letters written
    <prefix>:counts:replays                     hash "<job type>": dead letters replayed

A request key is `type:tenant_id:idempotency_key` (Envelope.request_key); a batch key is the
batch's run key (batches.py). Nothing else in the project builds a key: a unit test greps
for it (tests/unit/intake/test_keys.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from queue_pipelines.intake.registry import JOB_TYPES

DEFAULT_PREFIX = "qp"


@dataclass(frozen=True)
class IntakeKeys:
    prefix: str = DEFAULT_PREFIX

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # the streams
    def stream(self, job_type: str) -> str:
        """The intake stream of `job_type`; ValueError for a type the registry lacks."""
        if job_type not in JOB_TYPES:
            raise ValueError(
                f"unknown job type {job_type!r}: expected one of {', '.join(JOB_TYPES)}"
            )
        return self._key("intake", job_type)

    def job_type_of(self, stream_key: str) -> str | None:
        """What follows `<prefix>:intake:` in `stream_key` (a dead letter's `stream`); None for
        a key outside the intake's streams."""
        head = self._key("intake", "")
        return stream_key[len(head) :] if stream_key.startswith(head) else None

    @property
    def dead_letters(self) -> str:
        return self._key("dead-letter")

    def dead_letter_index(self, request_key: str) -> str:
        return self._key("dead-letter", "request", request_key)

    # requests
    def request_record(self, request_key: str) -> str:
        return self._key("request", request_key)

    def outcome(self, request_key: str) -> str:
        return self._key("outcome", request_key)

    def waiting(self, request_key: str) -> str:
        return self._key("waiting", request_key)

    # batches in flight
    def assigned(self, request_key: str) -> str:
        return self._key("assigned", request_key)

    def batch(self, batch_key: str) -> str:
        return self._key("batch", batch_key)

    def inflight(self, job_type: str) -> str:
        return self._key("inflight", job_type)

    # beside the intake: what jobs, providers and the gateway keep in the same Redis
    def refund_lock(self, payment_intent_id: str) -> str:
        return self._key("lock", "refund", payment_intent_id)

    def transfer_lock(self, mint: str) -> str:
        return self._key("lock", "transfer", mint)

    @property
    def rate_limits(self) -> str:
        """The key prefix handed to the `limits` library, which adds its own parts."""
        return self._key("limits")

    def breaker(self, provider: str) -> str:
        return self._key("breaker", provider)

    def email_quota(self, tenant_id: str, utc_day: str) -> str:
        return self._key("quota", "email", tenant_id, utc_day)

    # counters /metrics reads (the dead letters written and replayed since the first)
    @property
    def dead_letter_counts(self) -> str:
        return self._key("counts", "dead-letters")

    @property
    def replay_counts(self) -> str:
        return self._key("counts", "replays")

    def pattern(self, *parts: str) -> str:
        """A SCAN/KEYS pattern: `pattern()` matches every key of this prefix,
        `pattern("outcome")` every outcome."""
        return self._key(*parts, "*")
