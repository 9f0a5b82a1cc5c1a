"""Prometheus metrics read from shared state (the Dagster instance and Redis) at scrape time.

Nothing counted inside a worker outlives its run: every value is derived from the run and
event storage that all run workers write to (a run's provider call tally, metrics/providers.py,
travels as its op's metadata), so it is right whichever pod ran the job, and a restarted
exporter starts from the same numbers.
"""

from queue_pipelines.metrics.collector import QueueMetricsCollector, build_registry
from queue_pipelines.metrics.run_totals import RunTotals

__all__ = ["QueueMetricsCollector", "RunTotals", "build_registry"]
