"""What waits on the intake, for `queue stats`, /metrics/queue-stats and the metrics
collector: per stream its length, what is pending and undelivered, the oldest ages, and per
tenant what waits (from at most STATS_SCAN entries of each stream)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from queue_pipelines.intake.dead_letter_stream import DeadLetterStream
from queue_pipelines.intake.entries import ENVELOPE_FIELD, EntryStreams, entry_time
from queue_pipelines.intake.registry import JOB_TYPES

# `queue stats` reads at most this many entries of a stream to age its waiting per tenant.
STATS_SCAN = 20_000

_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


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


def tenant_of(raw_envelope: str | None) -> str:
    """The tenant an entry names, or '?' for one that will be rejected."""
    try:
        tenant = json.loads(raw_envelope or "").get("tenant_id")
    except (ValueError, AttributeError):
        return "?"
    # Only a tenant id the envelope would accept (payloads.Identifier): one read from bytes
    # that are not UTF-8 holds surrogates, which no JSON or metrics answer can encode.
    return tenant if isinstance(tenant, str) and _TENANT_ID.fullmatch(tenant) else "?"


def intake_stats(
    entries: EntryStreams, dead_letters: DeadLetterStream, scan_limit: int = STATS_SCAN
) -> IntakeStats:
    now = time.time()
    return IntakeStats(
        [stream_stats(entries, job_type, now, scan_limit) for job_type in JOB_TYPES],
        dead_letters.length(),
    )


def stream_stats(entries: EntryStreams, job_type: str, now: float, scan_limit: int) -> StreamStats:
    length = entries.length(job_type)
    if not length:
        return StreamStats(job_type, 0, 0, 0, None)
    summary = entries.pending_summary(job_type)
    pending = summary["pending"]
    oldest_pending = round(now - entry_time(summary["min"]), 3) if pending else None
    counts: dict[str, int] = {}
    oldest: dict[str, float] = {}

    def count(entry_id: str, fields: dict[str, str]) -> None:
        # Entries come oldest first, so a tenant's first entry seen is its oldest.
        tenant = tenant_of(fields.get(ENVELOPE_FIELD))
        counts[tenant] = counts.get(tenant, 0) + 1
        oldest.setdefault(tenant, round(now - entry_time(entry_id), 3))

    complete = entries.scan(job_type, scan_limit, count)
    first = entries.oldest_id(job_type)
    return StreamStats(
        job_type,
        length,
        pending,
        length - pending,
        oldest_pending,
        round(now - entry_time(first), 3) if first else None,
        {tenant: TenantWaiting(counts[tenant], oldest[tenant]) for tenant in counts},
        complete,
    )
