"""Micro-batches: what a run carries (`Batch`, `BatchItem`), how many requests it may carry
and how long a smaller one waits (`BatchPolicy`), and how the requests of one tick are grouped
into batches (`form_batches`)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from queue_pipelines.intake.entries import entry_id_key
from queue_pipelines.intake.schema import Envelope


@dataclass(frozen=True)
class BatchPolicy:
    size: int = 100  # requests of one tenant per run; 1 is one run per request
    max_wait_seconds: float = 0.5  # how long a smaller batch waits for more
    max_attempts: int = 3  # runs that may end without settling a request
    max_launch_failures: int = 20  # runs that may end before any step started
    # A tenant with no batch of the type in flight: its smaller batch goes once no request of
    # it has come for this long, rather than after max_wait_seconds (None: it always waits).
    # A lone request on an idle stack is not kept waiting for company that is not coming,
    # while a burst, written over milliseconds, still fills its batches; once the tenant has
    # a run queued or working, its next requests gather for up to max_wait_seconds.
    quiet_seconds: float | None = None


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


def new_batch_key(job_type: str, tenant_id: str) -> str:
    # Unique, not derived from the members: what makes a repeated tick request the same run
    # is the batch recorded in Redis before the run is requested.
    return f"{job_type}:{tenant_id}:{uuid.uuid4().hex[:16]}"


def form_batches(
    job_type: str,
    items: Sequence[BatchItem],
    tenant_of: Mapping[str, str],
    policy: BatchPolicy,
    *,
    now: float,
    must_go: set[str],
    busy_tenants: Collection[str] = (),
) -> tuple[list[Batch], list[BatchItem], float | None]:
    """Group requests by tenant, highest priority first then oldest, into batches of at most
    `policy.size`. A tenant's last, smaller batch waits (returned second) while its oldest
    request is younger than `policy.max_wait_seconds`, unless it holds a request in `must_go`;
    a tenant not in `busy_tenants` (no batch of it in flight) waits only while its newest
    request is younger than `policy.quiet_seconds`. Third: when the first held batch goes
    anyway (unix time), or None."""
    by_tenant: dict[str, list[BatchItem]] = {}
    for item in items:
        by_tenant.setdefault(tenant_of[item.request_key], []).append(item)
    batches: list[Batch] = []
    held: list[BatchItem] = []
    due: list[float] = []
    for tenant_id, tenant_items in sorted(by_tenant.items()):
        tenant_items.sort(key=lambda i: (-i.priority, i.enqueued_at))
        for start in range(0, len(tenant_items), policy.size):
            chunk = tenant_items[start : start + policy.size]
            goes_at = _goes_at(chunk, policy, busy=tenant_id in busy_tenants)
            waiting_for_more = (
                len(chunk) < policy.size
                and now < goes_at
                and not any(i.request_key in must_go for i in chunk)
            )
            if waiting_for_more:
                held += chunk
                due.append(goes_at)
            else:
                key = new_batch_key(job_type, tenant_id)
                batches.append(Batch(key, job_type, tenant_id, tuple(chunk)))
    # Higher priority batches first: the run queue orders runs by priority, then by age.
    batches.sort(key=lambda b: -b.priority)
    return batches, held, min(due, default=None)


def _goes_at(chunk: Sequence[BatchItem], policy: BatchPolicy, *, busy: bool) -> float:
    """When a smaller batch stops waiting for more (unix time)."""
    at = min(i.enqueued_at for i in chunk) + policy.max_wait_seconds
    if policy.quiet_seconds is not None and not busy:
        at = min(at, max(i.enqueued_at for i in chunk) + policy.quiet_seconds)
    return at
