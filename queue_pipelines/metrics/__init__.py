"""Prometheus metrics read from shared state (the Dagster instance and Redis) at scrape time.

Nothing here counts inside a worker: every value is derived from the run and event storage
that all run workers write to, so it is right whichever pod ran the job, and a restarted
exporter starts from the same numbers.
"""

from queue_pipelines.metrics.collector import QueueMetricsCollector, build_registry
from queue_pipelines.metrics.run_totals import RunTotals

__all__ = ["QueueMetricsCollector", "RunTotals", "build_registry"]
