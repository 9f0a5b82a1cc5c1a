"""How long a request waited: from enqueue (its envelope's `created_at`, else its stream entry
id's time) to the start of the run serving it (`stage="started"`) and to its settlement
(`stage="settled"`).

`queue_request_wait_seconds` is a Prometheus histogram observed by the process that knows the
moment (a run worker as it starts a request, the code that settles it), and the same number is
returned for the step's metadata, where the UI shows it and the run storage keeps it.
"""

from __future__ import annotations

import time
from datetime import datetime

from prometheus_client import CollectorRegistry, Histogram

from queue_pipelines.intake.streams import entry_id_key

STAGES = ("started", "settled")
# From a fraction of a second (an idle queue) to hours (a backlog behind a provider outage).
WAIT_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600)

# Its own registry: the gateway's /metrics registry is computed from shared state at scrape
# time; a process that observes waits exposes this one (or pushes it) as it sees fit.
WAIT_REGISTRY = CollectorRegistry(auto_describe=True)
REQUEST_WAIT = Histogram(
    "queue_request_wait_seconds",
    "Seconds from a request's enqueue to the start of its run (stage=started) and to its "
    "settlement (stage=settled).",
    labelnames=("job_type", "stage"),
    buckets=WAIT_BUCKETS,
    registry=WAIT_REGISTRY,
)


def enqueued_at(created_at: datetime | str | None = None, entry_id: str | None = None) -> float:
    """The request's enqueue time, as a Unix timestamp."""
    if isinstance(created_at, str):
        created_at = datetime.fromisoformat(created_at)
    if created_at is not None:
        return created_at.timestamp()
    if entry_id is not None:
        return entry_id_key(entry_id)[0] / 1000
    raise ValueError("give the envelope's created_at or the stream entry id")


def observe_request_wait(
    job_type: str,
    stage: str,
    enqueued: float,
    now: float | None = None,
    histogram: Histogram = REQUEST_WAIT,
) -> float:
    """Observe one request's wait at `stage`; returns the seconds, for step metadata
    (e.g. `{"wait_started_seconds": ...}`). A clock behind the producer's counts as 0."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    waited = max((time.time() if now is None else now) - enqueued, 0.0)
    histogram.labels(job_type=job_type, stage=stage).observe(waited)
    return round(waited, 3)
