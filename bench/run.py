"""Micro-benchmarks: intake throughput, sensor tick cost (fresh entries, and a backlog that
takes several ticks), payment run cost by batch size (in process), peak memory.

    uv run --frozen python -m bench.run            # full sizes
    uv run --frozen python -m bench.run --smoke    # CI sizes (make bench)
    REDIS_URL=redis://... uv run --frozen python -m bench.run

The whole pipeline (daemon, run queue, run processes) is bench/e2e.py.

Figures go to stdout and bench/results/latest.json. Nothing here is asserted: tests check
behaviour, this measures it.
"""

from __future__ import annotations

import argparse
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

from queue_pipelines.intake.batches import Batch, BatchPolicy
from queue_pipelines.intake.dispatch import TickCursor, run_intake_tick
from queue_pipelines.intake.payloads import PaymentPayload
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.intake.streams import IntakeStreams
from queue_pipelines.jobs.batch import batch_run_config
from queue_pipelines.jobs.payment import payment_job
from queue_pipelines.sandbox.defaults import SANDBOX_WEBHOOK_SECRET
from queue_pipelines.sandbox.outbox import start_sink
from queue_pipelines.sandbox.servers import (
    free_port,
    start_localstripe,
    start_on_a_free_port,
    start_redis,
    stop,
)
from resources import (
    EffectLedgerResource,
    NotificationSettingsResource,
    NotifierResource,
    RedisResource,
    SmtpResource,
    StripeResource,
    WebhookResource,
)
from sensors.intake import lookup_batch_runs

RESULTS = Path(__file__).parent / "results"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


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


def tick(intake: IntakeStreams, instance: dg.DagsterInstance, cursor: TickCursor, max_entries: int):
    """One intake sensor tick as the daemon evaluates it (the run lookup on `instance`)."""
    return run_intake_tick(
        intake,
        "payment",
        cursor,
        lambda keys: lookup_batch_runs(instance, keys),
        policy=BatchPolicy(size=100, max_wait_seconds=0),
        max_entries=max_entries,
        reclaim_after_seconds=300,
        now=time.time(),
    )


def bench_tick(intake: IntakeStreams, instance: dg.DagsterInstance, entries: int = 200) -> dict:
    """One sensor tick over `entries` fresh entries: read, validate, look up runs, batch."""
    intake.enqueue_many(envelopes(f"bench-tick-{uuid.uuid4().hex[:6]}", entries))
    started = time.perf_counter()
    outcome = tick(intake, instance, TickCursor(), entries)
    elapsed = time.perf_counter() - started
    return {
        "entries": outcome.read,
        "launches": len(outcome.launches),
        "milliseconds": round(elapsed * 1000, 1),
        "entries_per_second": round(outcome.read / elapsed),
    }


def bench_backlog(
    intake: IntakeStreams, instance: dg.DagsterInstance, backlog: int, max_entries: int = 1000
) -> dict:
    """A backlog of `backlog` entries in a stream the sensor has not read yet (a daemon that
    was down): the ticks it takes, at most `max_entries` each as in production, until every
    request is in a batch. No run ends meanwhile, so each tick also looks up every batch in
    flight: the worst case of the settle step."""
    # A stream of its own: the entries of the other benchmarks are not part of the backlog.
    intake = IntakeStreams(intake.client, f"{intake.prefix}-backlog")
    items = envelopes(f"bench-backlog-{uuid.uuid4().hex[:6]}", backlog)
    for start in range(0, backlog, 1000):
        intake.enqueue_many(items[start : start + 1000])
    cursor, timings, batch_keys, batched = TickCursor(), [], set(), 0
    for _ in range(backlog // max_entries + 5):
        started = time.perf_counter()
        outcome = tick(intake, instance, cursor, max_entries)
        timings.append(time.perf_counter() - started)
        cursor = outcome.cursor
        # A batch whose run is not there yet is requested again each tick: count it once.
        new = [b for b in outcome.launches if b.key not in batch_keys]
        batch_keys.update(b.key for b in new)
        batched += sum(len(b.items) for b in new)
        if batched >= backlog:
            break
    return {
        "entries": backlog,
        "max_entries_per_tick": max_entries,
        "ticks": len(timings),
        "batched": batched,
        "tick_ms": [round(t * 1000) for t in timings],
        "tick_max_ms": round(max(timings) * 1000, 1),
        "total_seconds": round(sum(timings), 2),
    }


def bench_payment_runs(
    resources: dict, instance: dg.DagsterInstance, sizes: list[int], runs: int = 3
) -> list[dict]:
    """payment_job in process (no run process, no queue) on batches of each size: what a run
    costs apart from its launch, and how that grows with the batch."""
    figures = []
    for size in sizes:
        timings = []
        for _ in range(runs):
            batch = Batch.of(envelopes(f"bench-run-{uuid.uuid4().hex[:6]}", size))
            started = time.perf_counter()
            result = payment_job.execute_in_process(
                run_config={**batch_run_config(batch), **QUIET},
                instance=instance,
                resources=resources,
            )
            timings.append(time.perf_counter() - started)
            assert result.success
        figures.append(
            {
                "batch_size": size,
                "runs": runs,
                "run_median_ms": round(statistics.median(timings) * 1000, 1),
                "per_payment_ms": round(statistics.median(timings) * 1000 / size, 2),
                "payments_per_second": round(size / statistics.median(timings), 1),
            }
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--smoke", action="store_true", help="small sizes, for CI")
    parser.add_argument("--backlog", type=int, help="entries in the backlog (default 10000)")
    parser.add_argument("--batch-sizes", help="payment run batch sizes, e.g. 1,20,100,500")
    parser.add_argument("--repeat", type=int, help="runs per batch size (default 3)")
    args = parser.parse_args()
    if args.smoke:
        sizes = {"enqueue": 500, "tick": 100, "backlog": 1500, "runs": [1, 10], "repeat": 1}
    else:
        sizes = {"enqueue": 5000, "tick": 1000, "backlog": 10_000, "runs": [1, 20, 100, 500]}
        sizes["repeat"] = 3
    if args.backlog:
        sizes["backlog"] = args.backlog
    if args.batch_sizes:
        sizes["runs"] = [int(size) for size in args.batch_sizes.split(",")]
    if args.repeat:
        sizes["repeat"] = args.repeat
    children = []
    sink = None
    try:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            port, server = start_on_a_free_port(lambda p: start_redis(p, None))
            children.append(server)
            redis_url = f"redis://127.0.0.1:{port}/0"
        stripe_port, sandbox = start_on_a_free_port(start_localstripe)
        children.append(sandbox)
        smtp_port = free_port()
        sink = start_sink(
            Path(os.environ.get("TMPDIR", "/tmp")) / f"qp-bench-{smtp_port}", smtp_port
        )
        prefix = f"qpbench-{uuid.uuid4().hex[:8]}"
        intake = IntakeStreams(redis.Redis.from_url(redis_url, decode_responses=True), prefix)
        with dg.instance_for_test() as instance:
            resources = {
                "stripe": StripeResource(
                    secret_key="sk_test_bench",
                    api_base=f"http://127.0.0.1:{stripe_port}",
                ),
                "effect_ledger": EffectLedgerResource(
                    database_url=f"sqlite:///{instance.root_directory}/ledger.db"
                ),
                "redis": RedisResource(url=redis_url, key_prefix=prefix),
                "notifier": NotifierResource(
                    smtp=SmtpResource(host="127.0.0.1", port=smtp_port, security="none"),
                    webhooks=WebhookResource(secret=SANDBOX_WEBHOOK_SECRET, sandbox=True),
                    notification_settings=NotificationSettingsResource(),
                ),
            }
            figures = {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                },
                "enqueue": bench_enqueue(intake, sizes["enqueue"]),
                "sensor_tick": bench_tick(intake, instance, sizes["tick"]),
                "payment_run": bench_payment_runs(
                    resources, instance, sizes["runs"], sizes["repeat"]
                ),
                "backlog": bench_backlog(intake, instance, sizes["backlog"]),
            }
        figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        for key in intake.client.scan_iter(f"{prefix}:*"):
            intake.client.delete(key)
    finally:
        if sink is not None:
            sink.stop()
        for child in children:
            stop(child)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
