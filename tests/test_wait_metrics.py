"""queue_request_wait_seconds: observed per job type and stage, exposed in Prometheus' format."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from queue_pipelines.metrics.wait import WAIT_BUCKETS, enqueued_at, observe_request_wait


def fresh_histogram():
    registry = CollectorRegistry()
    histogram = Histogram(
        "queue_request_wait_seconds", "doc", ["job_type", "stage"], buckets=WAIT_BUCKETS,
        registry=registry,
    )  # fmt: skip
    return registry, histogram


def test_waits_land_in_buckets_by_job_type_and_stage():
    registry, histogram = fresh_histogram()
    start = enqueued_at("2026-01-01T00:00:00+00:00")

    assert observe_request_wait("payment", "started", start, start + 3, histogram) == 3
    observe_request_wait("payment", "settled", start, start + 40, histogram)
    observe_request_wait("mint", "started", start, start - 2, histogram)  # producer's clock ahead

    text = generate_latest(registry).decode()
    assert (
        'queue_request_wait_seconds_bucket{job_type="payment",le="5.0",stage="started"} 1.0' in text
    )
    assert (
        'queue_request_wait_seconds_bucket{job_type="payment",le="30.0",stage="settled"} 0.0'
        in text
    )
    assert (
        'queue_request_wait_seconds_bucket{job_type="payment",le="60.0",stage="settled"} 1.0'
        in text
    )
    assert 'queue_request_wait_seconds_sum{job_type="mint",stage="started"} 0.0' in text


def test_enqueue_time_from_the_envelope_or_the_entry_id():
    when = datetime(2026, 1, 1, tzinfo=UTC)
    assert enqueued_at(when) == when.timestamp()
    assert enqueued_at(entry_id=f"{int(when.timestamp() * 1000)}-3") == when.timestamp()
    with pytest.raises(ValueError):
        observe_request_wait("payment", "queued", 0.0)
