"""Latency and errors of calls to providers (Stripe, SMTP, webhooks, Solana), per provider and
operation. Wrap a call in `observe_provider_call("stripe", "payment_intents.create")`.

Every call counts twice, cheaply and in memory:
- in this process's Prometheus histograms (PROVIDER_REGISTRY), which the gateway exports for
  the calls the gateway itself makes;
- in each `ProviderCallTally` opened around it with `tally_provider_calls()`: a batch run opens
  one for its requests and records it in its op's metadata, from which the gateway's run
  totals build the run workers' histograms (docs/metrics.md). Run workers exit after their
  batch and are never scraped, so this is how their calls reach /metrics.

The tally follows the caller through a context variable: threads that handle the caller's
work must run in a copy of its context (queue_pipelines.request_runner.process_items does).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from queue_pipelines.failures import ProviderError
from queue_pipelines.telemetry.histogram import DurationHistogram

# Seconds: the sandbox answers in milliseconds, live providers in 100-500 ms, SMTP and
# webhooks up to their 15-30 s timeouts.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A call's outcome in a tally: it returned, or it raised an error of one of the failure
# classes (queue_pipelines.failures), or something no classifier knows.
OK, TRANSIENT, PERMANENT, UNEXPECTED = "ok", "transient", "permanent", "unexpected"

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


class ProviderCallTally:
    """Calls per (provider, operation, outcome): their latency bucket counts and sum.
    Thread-safe: a batch's requests are handled in several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str, str], DurationHistogram] = {}

    def observe(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        with self._lock:
            key = (provider, operation, outcome)
            if key not in self._series:
                self._series[key] = DurationHistogram(buckets=LATENCY_BUCKETS)
            self._series[key].observe(seconds)

    def series(self) -> dict[tuple[str, str, str], DurationHistogram]:
        """A copy of the counts, per (provider, operation, outcome)."""
        with self._lock:
            return {
                key: DurationHistogram(h.buckets, list(h.counts), h.total)
                for key, h in self._series.items()
            }

    def as_json(self) -> dict[str, Any]:
        return tally_as_json(self.series())


def tally_as_json(series: dict[tuple[str, str, str], DurationHistogram]) -> dict[str, Any]:
    """One compact value: the bucket bounds once, then a row per series (provider, operation,
    outcome, count per bucket, sum of seconds)."""
    return {
        "buckets": list(LATENCY_BUCKETS),
        "calls": [[*key, h.counts, round(h.total, 6)] for key, h in sorted(series.items())],
    }


def tally_from_json(data: Any) -> dict[tuple[str, str, str], DurationHistogram]:
    """The series of a tally's `as_json`; empty when it is malformed or its buckets are not
    this code's (a worker of another release: its counts cannot be re-binned)."""
    if not isinstance(data, dict) or tuple(data.get("buckets") or ()) != LATENCY_BUCKETS:
        return {}
    try:
        return {
            (str(provider), str(operation), str(outcome)): DurationHistogram(
                LATENCY_BUCKETS, [int(c) for c in counts], float(total)
            )
            for provider, operation, outcome, counts, total in data.get("calls") or []
        }
    except (TypeError, ValueError):
        return {}


_TALLIES: ContextVar[tuple[ProviderCallTally, ...]] = ContextVar("provider_tallies", default=())


@contextmanager
def tally_provider_calls() -> Iterator[ProviderCallTally]:
    """Count the provider calls made inside the block (and in threads run in copies of its
    context) in a tally of its own."""
    tally = ProviderCallTally()
    token = _TALLIES.set((*_TALLIES.get(), tally))
    try:
        yield tally
    finally:
        _TALLIES.reset(token)


Classifier = Callable[[BaseException], ProviderError | None]


def failure_class(exc: BaseException, classify: Classifier | None = None) -> str:
    """transient / permanent for a ProviderError, or for what `classify` makes of another
    exception; unexpected when neither says."""
    if not isinstance(exc, ProviderError) and classify is not None:
        try:
            exc = classify(exc) or exc
        except Exception:  # noqa: BLE001 - a classifier that cannot read it: unexpected
            return UNEXPECTED
    if isinstance(exc, ProviderError):
        return PERMANENT if exc.permanent else TRANSIENT
    return UNEXPECTED


class ProviderCall:
    """What `observe_provider_call` yields: a call that returned, but with an answer that says
    it failed (an HTTP error status), is marked with `failed(error)` and counts as an error."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: ProviderError | None = None

    def failed(self, error: ProviderError) -> None:
        self.error = error


def _count_error(
    provider: str, operation: str, error: BaseException, outcome: str, elapsed: float
) -> None:
    name = type(error).__name__
    PROVIDER_CALL_ERROR_SECONDS.labels(provider, operation, name).observe(elapsed)
    PROVIDER_CALL_ERRORS.labels(provider, operation, name).inc()
    for tally in _TALLIES.get():
        tally.observe(provider, operation, outcome, elapsed)


@contextmanager
def observe_provider_call(
    provider: str,
    operation: str,
    classify: Classifier | None = None,
) -> Iterator[ProviderCall]:
    """Time the block; an exception is counted under its class name (and, in tallies, its
    failure class, by `classify` when it is not a ProviderError yet) and re-raised."""
    call = ProviderCall()
    started = time.perf_counter()
    try:
        yield call
    except BaseException as exc:
        elapsed = time.perf_counter() - started
        PROVIDER_CALL_SECONDS.labels(provider, operation).observe(elapsed)
        _count_error(provider, operation, exc, failure_class(exc, classify), elapsed)
        raise
    elapsed = time.perf_counter() - started
    PROVIDER_CALL_SECONDS.labels(provider, operation).observe(elapsed)
    if call.error is not None:
        _count_error(provider, operation, call.error, failure_class(call.error), elapsed)
        return
    for tally in _TALLIES.get():
        tally.observe(provider, operation, OK, elapsed)


def provider_collectors() -> list:
    """What an exporter registers: this process's provider metrics."""
    return [PROVIDER_REGISTRY]
