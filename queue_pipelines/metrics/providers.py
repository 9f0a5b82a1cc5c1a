"""Latency and errors of calls to providers (Stripe, SMTP, webhooks, Solana), per provider and
operation. Wrap a call in `observe_provider_call("stripe", "payment_intents.create")`.

These count in the process that makes the call (a run worker, or the gateway): an exporter
shows the calls of its own process. Carrying run workers' values to the exporter (run
metadata, as the run totals do, or a push gateway) is left to the job layer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram

# Seconds: the sandbox answers in milliseconds, live providers in 100-500 ms, SMTP and
# webhooks up to their 15-30 s timeouts.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

PROVIDER_REGISTRY = CollectorRegistry(auto_describe=True)

PROVIDER_CALL_SECONDS = Histogram(
    "provider_call_duration_seconds",
    "Time a call to a provider took, successful or not.",
    ["provider", "operation"],
    buckets=LATENCY_BUCKETS,
    registry=PROVIDER_REGISTRY,
)
PROVIDER_CALL_ERROR_SECONDS = Histogram(
    "provider_call_error_duration_seconds",
    "Time a failed call to a provider took before it failed, by error type.",
    ["provider", "operation", "error"],
    buckets=LATENCY_BUCKETS,
    registry=PROVIDER_REGISTRY,
)
PROVIDER_CALL_ERRORS = Counter(
    "provider_call_errors",
    "Calls to a provider that raised, by error type.",
    ["provider", "operation", "error"],
    registry=PROVIDER_REGISTRY,
)


@contextmanager
def observe_provider_call(provider: str, operation: str) -> Iterator[None]:
    """Time the block; an exception is counted under its class name and re-raised."""
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        elapsed = time.perf_counter() - started
        error = type(exc).__name__
        PROVIDER_CALL_SECONDS.labels(provider, operation).observe(elapsed)
        PROVIDER_CALL_ERROR_SECONDS.labels(provider, operation, error).observe(elapsed)
        PROVIDER_CALL_ERRORS.labels(provider, operation, error).inc()
        raise
    PROVIDER_CALL_SECONDS.labels(provider, operation).observe(time.perf_counter() - started)


def provider_collectors() -> list:
    """What an exporter registers: this process's provider metrics."""
    return [PROVIDER_REGISTRY]
