"""Telemetry that every layer may use, below the providers and free of Dagster: the timing
and tally of provider calls, the histogram they fill, and the names metrics share.
`queue_pipelines.metrics` turns them, with the Dagster instance and Redis, into /metrics."""
