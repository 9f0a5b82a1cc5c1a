"""Benchmarks: intake throughput, sensor tick cost, payment run cost, peak memory.

    make bench                     # embedded Redis and localstripe, SQLite Dagster instance
    REDIS_URL=redis://... make bench

Figures go to stdout and bench/results/latest.json. Nothing here is asserted: tests check
behaviour, this measures it.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
import uuid
from pathlib import Path

import dagster as dg
import redis

from queue_pipelines.intake.dispatch import TickCursor, run_intake_tick
from queue_pipelines.intake.payloads import PaymentPayload
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.intake.streams import IntakeStreams
from queue_pipelines.jobs.payment import payment_job, payment_run_config
from queue_pipelines.sandbox.servers import (
    start_localstripe,
    start_on_a_free_port,
    start_redis,
    stop,
)
from resources import EffectLedgerResource, RedisResource, StripeResource
from sensors.intake import lookup_request_runs

RESULTS = Path(__file__).parent / "results"


def envelopes(tenant: str, count: int) -> list[Envelope]:
    return [
        Envelope(
            type="payment",
            tenant_id=tenant,
            idempotency_key=f"bench-{i}",
            payload=PaymentPayload(
                order_id=f"o{i}",
                amount=1000 + i,
                currency="usd",
                customer_email=f"buyer{i % 50}@example.com",
                payment_method="pm_card_visa",
            ),
        )
        for i in range(count)
    ]


def bench_enqueue(intake: IntakeStreams, count: int = 5000, batch: int = 500) -> dict:
    items = envelopes("bench-enqueue", count)
    started = time.perf_counter()
    for i in range(0, count, batch):
        intake.enqueue_many(items[i : i + batch])
    elapsed = time.perf_counter() - started
    return {"envelopes": count, "seconds": round(elapsed, 3), "per_second": round(count / elapsed)}


def bench_tick(intake: IntakeStreams, instance: dg.DagsterInstance, entries: int = 200) -> dict:
    """One sensor tick over `entries` fresh entries: read, validate, look up runs, track."""
    intake.enqueue_many(envelopes(f"bench-tick-{uuid.uuid4().hex[:6]}", entries))
    started = time.perf_counter()
    outcome = run_intake_tick(
        intake,
        "payment",
        TickCursor(),
        lambda keys: lookup_request_runs(instance, "payment", keys),
        max_entries=entries,
        reclaim_after_seconds=300,
    )
    elapsed = time.perf_counter() - started
    return {
        "entries": outcome.read,
        "launches": len(outcome.launches),
        "milliseconds": round(elapsed * 1000, 1),
        "entries_per_second": round(outcome.read / elapsed),
    }


def bench_payment_runs(resources: dict, instance: dg.DagsterInstance, runs: int = 30) -> dict:
    timings = []
    for envelope in envelopes(f"bench-run-{uuid.uuid4().hex[:6]}", runs):
        started = time.perf_counter()
        result = payment_job.execute_in_process(
            run_config=payment_run_config(envelope), instance=instance, resources=resources
        )
        timings.append(time.perf_counter() - started)
        assert result.success
    timings.sort()
    return {
        "runs": runs,
        "mean_ms": round(statistics.mean(timings) * 1000, 1),
        "p50_ms": round(timings[len(timings) // 2] * 1000, 1),
        "p95_ms": round(timings[int(len(timings) * 0.95) - 1] * 1000, 1),
    }


def main() -> None:
    children = []
    try:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            port, server = start_on_a_free_port(lambda p: start_redis(p, None))
            children.append(server)
            redis_url = f"redis://127.0.0.1:{port}/0"
        stripe_port, sandbox = start_on_a_free_port(start_localstripe)
        children.append(sandbox)
        prefix = f"qpbench-{uuid.uuid4().hex[:8]}"
        intake = IntakeStreams(redis.Redis.from_url(redis_url, decode_responses=True), prefix)
        with dg.instance_for_test() as instance:
            resources = {
                "stripe": StripeResource(
                    secret_key="sk_test_bench",
                    api_base=f"http://127.0.0.1:{stripe_port}",
                    max_network_retries=0,
                ),
                "effect_ledger": EffectLedgerResource(
                    database_url=f"sqlite:///{instance.root_directory}/ledger.db"
                ),
                "redis": RedisResource(url=redis_url, key_prefix=prefix),
            }
            figures = {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "enqueue": bench_enqueue(intake),
                "sensor_tick": bench_tick(intake, instance),
                "payment_run": bench_payment_runs(resources, instance),
            }
        figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        for key in intake.client.scan_iter(f"{prefix}:*"):
            intake.client.delete(key)
    finally:
        for child in children:
            stop(child)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
