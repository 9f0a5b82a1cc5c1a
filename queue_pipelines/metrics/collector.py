"""The Prometheus collector: every family the service exports, computed at scrape time."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping

import dagster as dg
import redis
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from queue_pipelines import tags
from queue_pipelines.intake.registry import SPECS, JobTypeSpec
from queue_pipelines.intake.streams import IntakeStreams
from queue_pipelines.metrics.run_totals import RunTotals, Totals
from queue_pipelines.telemetry.histogram import DurationHistogram
from queue_pipelines.telemetry.provider_calls import OK

log = logging.getLogger("queue_pipelines.metrics")

IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
# Pages of run-end events one scrape counts: a backlog (a first start, a long outage) is
# caught up by RunTotals.warm_up in the background while scrapes answer in time.
SCRAPE_PAGES = 5


def _counter(name: str, doc: str, labels: list[str], samples) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(samples.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


def _gauge(name: str, doc: str, labels: list[str], samples) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(samples.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


def _single(kind, name: str, doc: str, value: float):
    return kind(name, doc, value=value)


def _worker_provider_calls(
    calls: dict[tuple[str, str, str], DurationHistogram],
) -> Iterator[Metric]:
    """The provider calls of the run workers, from their runs' tallies: every call per
    provider and operation, and the failed ones by failure class. Named apart from the
    gateway's own live provider_call_* series, which count only the gateway's calls."""
    every: dict[tuple[str, str], DurationHistogram] = {}
    for (provider, operation, _outcome), h in calls.items():
        every.setdefault((provider, operation), DurationHistogram(h.buckets)).merge(h)
    family = HistogramMetricFamily(
        "worker_provider_call_duration_seconds",
        "Time a provider call made by a run worker took, successful or not (from each "
        "finished run's provider_calls metadata).",
        labels=["provider", "operation"],
    )
    for key, h in sorted(every.items()):
        family.add_metric(list(key), h.cumulative(), sum_value=h.total)
    yield family
    errors = HistogramMetricFamily(
        "worker_provider_call_error_duration_seconds",
        "Time a failed provider call made by a run worker took before it failed, by failure "
        "class (transient, permanent, unexpected).",
        labels=["provider", "operation", "error_class"],
    )
    for (provider, operation, outcome), h in sorted(calls.items()):
        if outcome != OK:
            errors.add_metric([provider, operation, outcome], h.cumulative(), sum_value=h.total)
    yield errors


def _job_type_families(specs: Mapping[str, JobTypeSpec], t: Totals) -> Iterator[Metric]:
    """Each job type's own families, as its RequestMetrics in the registry name them."""
    for spec in specs.values():
        if spec.metrics is None:
            continue
        m = spec.metrics
        if m.status_column is not None:
            labels = ["currency", "status"]
        else:
            labels = [*([m.label_field] if m.label_field else []), "status"]
        yield _counter(
            m.requests.metric, m.requests.help, labels, t.counted.get(m.requests.totals_key, {})
        )
        if m.amounts is not None:
            yield _gauge(
                m.amounts.metric,
                m.amounts.help,
                ["currency"],
                t.counted.get(m.amounts.totals_key, {}),
            )


class QueueMetricsCollector(Collector):
    def __init__(
        self,
        instance: dg.DagsterInstance,
        intake: IntakeStreams,
        specs: Mapping[str, JobTypeSpec] = SPECS,
    ):
        self.instance = instance
        self.intake = intake
        self.specs = specs
        self.run_totals = RunTotals(instance, specs=specs)
        self.started = time.time()

    def collect(self) -> Iterator[Metric]:
        up: dict[str, int] = {}
        yield from self._from_runs(up)
        yield from self._from_redis(up)
        yield _gauge(
            "queue_metrics_source_up", "1 if the source answered this scrape.", ["source"], up
        )
        yield _single(
            GaugeMetricFamily,
            "service_uptime_seconds",
            "Seconds since this gateway process started.",
            time.time() - self.started,
        )

    def _from_runs(self, up: dict[str, int]) -> Iterator[Metric]:
        try:
            t = self.run_totals.refresh(max_pages=SCRAPE_PAGES)
            active = {
                queue: self.instance.get_runs_count(
                    dg.RunsFilter(statuses=IN_PROGRESS, tags={tags.JOB_TYPE: queue})
                )
                for queue in self.specs
            }
        except Exception:  # noqa: BLE001 - a scrape reports the outage rather than failing
            log.exception("could not read the Dagster instance")
            up["dagster"] = 0
            return
        up["dagster"] = 1
        yield _counter(
            "queue_jobs_processed_total",
            "Requests settled by runs, by queue (queue/job_type tag) and outcome: success, "
            "failure (a declined card is one); a run of a job that is not an intake job counts "
            "as one.",
            ["queue", "status"],
            t.items,
        )
        yield _counter(
            "queue_runs_total",
            "Finished runs by queue and run status (success, failure, canceled).",
            ["queue", "status"],
            t.runs,
        )
        yield _counter(
            "queue_jobs_failed_total",
            "Failed runs by queue and failure class (permanent, transient, unexpected, run_failure).",
            ["queue", "reason"],
            t.failures,
        )
        histogram = HistogramMetricFamily(
            "queue_job_processing_duration_seconds",
            "Run duration from start to end, one observation per finished run.",
            labels=["queue"],
        )
        for queue, h in sorted(t.durations.items()):
            histogram.add_metric([queue], h.cumulative(), sum_value=h.total)
        yield histogram
        launches = HistogramMetricFamily(
            "queue_run_launch_latency_seconds",
            "Seconds from a run's creation (requested by a sensor, the UI or the CLI) to its "
            "start, one observation per finished run.",
            labels=["queue"],
        )
        for queue, h in sorted(t.launches.items()):
            launches.add_metric([queue], h.cumulative(), sum_value=h.total)
        yield launches
        waits = HistogramMetricFamily(
            "queue_request_wait_seconds",
            "Seconds from a request's enqueue to the start of the run that settled it "
            "(stage=started) and to its settlement (stage=settled), one observation per request.",
            labels=["job_type", "stage"],
        )
        for key, h in sorted(t.waits.items()):
            waits.add_metric(key.split("/"), h.cumulative(), sum_value=h.total)
        yield waits
        yield from _worker_provider_calls(t.provider_calls)
        yield _gauge("queue_active_jobs", "Runs starting or running, by queue.", ["queue"], active)
        yield from _job_type_families(self.specs, t)
        yield _gauge(
            "solana_wallet_balance_sol",
            "Newest wallet balance a run recorded (metadata wallet_balance_sol).",
            ["wallet"],
            {wallet: value for wallet, (_, value) in t.wallet_balances.items()},
        )
        for name, doc, value in (
            (
                "emails_sent_total",
                "E-mails sent by runs (not those sent earlier).",
                t.emails["sent"],
            ),
            ("emails_failed_total", "E-mails that failed for good in runs.", t.emails["failed"]),
            ("webhooks_sent_total", "Webhooks delivered by runs.", t.webhooks["sent"]),
            (
                "webhooks_failed_total",
                "Webhooks that failed for good in runs.",
                t.webhooks["failed"],
            ),
        ):
            yield _single(CounterMetricFamily, name, doc, value)
        yield _counter(
            "ledger_replays_total",
            "Effects a run returned from the effect ledger instead of doing them again, by kind "
            "(a job type: its charge, refund, mint or transfer; email; webhook).",
            ["kind"],
            t.replays,
        )
        yield _counter(
            "stripe_reconciliations_total",
            "Stripe events reconciled with the effect ledger, by event type and outcome "
            "(matched, amount_mismatch, conflict, refunded_outside_pipeline, ...).",
            ["event_type", "outcome"],
            t.reconciliations,
        )

    def _from_redis(self, up: dict[str, int]) -> Iterator[Metric]:
        try:
            stats = self.intake.stats()
        except redis.RedisError:
            log.exception("could not read the intake Redis")
            up["redis"] = 0
            return
        up["redis"] = 1
        yield _gauge(
            "queue_size",
            "Entries in each intake stream.",
            ["queue"],
            {s.job_type: s.length for s in stats.streams},
        )
        yield _gauge(
            "queue_pending",
            "Entries read by a sensor and not yet settled.",
            ["queue"],
            {s.job_type: s.pending for s in stats.streams},
        )
        yield _single(
            GaugeMetricFamily,
            "queue_dead_letter_size",
            "Entries in the dead-letter stream.",
            stats.dead_letters,
        )
        try:
            letters, replays = self.intake.letters.counts()
            added = self._entries_added()
        except redis.RedisError:
            log.exception("could not read the intake's counters")
            up["redis"] = 0
            return
        yield _counter(
            "dead_letters_total",
            "Dead letters written, by queue and failure class (rejected, failed, not_started, "
            "unsettled, notice).",
            ["queue", "failure_class"],
            letters,
        )
        yield _counter(
            "dead_letter_replays_total",
            "Dead letters replayed onto their stream by an operator (dlq replay), by queue.",
            ["queue"],
            replays,
        )
        yield _counter(
            "intake_enqueued_total",
            "Entries ever added to each intake stream, by any producer (Redis's entries-added "
            "of the stream; absent before Redis 7).",
            ["queue"],
            added,
        )

    def _entries_added(self) -> dict[str, int]:
        """Per job type, the entries its stream ever took (XINFO STREAM's entries-added,
        Redis 7 and later): every producer's enqueues, whichever process wrote them."""
        pipe = self.intake.client.pipeline(transaction=False)
        for job_type in self.specs:
            pipe.xinfo_stream(self.intake.stream_key(job_type))
        added = {}
        for job_type, info in zip(self.specs, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(info, dict) and "entries-added" in info:
                added[job_type] = int(info["entries-added"])
        return added


def build_registry(
    collector: QueueMetricsCollector, system=None, gateway=None
) -> CollectorRegistry:
    """Every family /metrics serves: the collector's, this process's, and `gateway`'s (a
    GatewayMetrics registry: the requests this gateway process answered)."""
    from queue_pipelines.metrics.system import SystemCollector, SystemUsage
    from queue_pipelines.telemetry.provider_calls import provider_collectors

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_cpu_seconds_total
    registry.register(SystemCollector(system or SystemUsage()))
    for provider_collector in provider_collectors():
        registry.register(provider_collector)
    if gateway is not None:
        registry.register(gateway)
    return registry
