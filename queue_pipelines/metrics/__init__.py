"""Prometheus metrics read from shared state (the Dagster instance and Redis) at scrape time.

Nothing counted inside a worker outlives its run: every value is derived from the run and
event storage that all run workers write to (a run's provider call tally,
queue_pipelines/telemetry/provider_calls.py, travels as its op's metadata), so it is right
whichever pod ran the job, and a restarted exporter starts from the same numbers.

Import the modules themselves (`metrics.collector`, `metrics.run_totals`): this package loads
nothing, so that the Dagster-free telemetry below it stays free of Dagster.
"""
