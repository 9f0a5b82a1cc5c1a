"""What the gateway itself answered: its requests' durations, its refusals, the Stripe events it
took. Counted in the gateway process, per replica, for the requests that replica served (sum
the replicas in PromQL); unlike the run totals they start from zero when the process does,
which Prometheus's rate() and increase() read as a counter reset. Everything the runs did is
read from the Dagster instance instead (run_totals.py)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from queue_pipelines.intake.payloads import STRIPE_EVENT_TYPES
from queue_pipelines.telemetry.provider_calls import LATENCY_BUCKETS

# Requests to a path that is no route share one label value, so a scanner cannot grow the
# series without bound.
OTHER_ROUTE = "other"
UNKNOWN_TYPE = "unknown"


class GatewayMetrics:
    """The gateway's own families, in a registry of this gateway (app) of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds",
            "HTTP requests this gateway process answered, by route and status code, and the "
            "seconds each took until its response was sent.",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.auth_refusals = Counter(
            "gateway_auth_refusals",
            "Requests this gateway process refused for their credentials, by reason "
            "(missing_token, expired, bad_signature, wrong_tenant, missing_scope, ...).",
            ["reason"],
            registry=self.registry,
        )
        self.job_requests = Counter(
            "gateway_job_requests",
            "POST /v1/jobs requests with valid credentials this gateway process answered, by "
            "job type and result: accepted, duplicate, or why it was refused.",
            ["type", "result"],
            registry=self.registry,
        )
        self.stripe_events = Counter(
            "stripe_webhook_events",
            "Stripe webhook requests this gateway process answered, by event type (unknown "
            "before the signature verifies) and result: enqueued, duplicate, ignored, "
            "rejected (signature or payload), or why it was not enqueued.",
            ["type", "result"],
            registry=self.registry,
        )

    def auth_refused(self, reason: str) -> None:
        self.auth_refusals.labels(reason).inc()

    def job_request(self, job_type: str | None, result: str) -> None:
        self.job_requests.labels(job_type or UNKNOWN_TYPE, result).inc()

    def stripe_event(self, event_type: object, result: str) -> None:
        known = event_type if isinstance(event_type, str) and event_type else UNKNOWN_TYPE
        # Any type Stripe sends is counted, but only ours get a label of their own.
        if known not in STRIPE_EVENT_TYPES and known != UNKNOWN_TYPE:
            known = "other"
        self.stripe_events.labels(known, result).inc()


class RequestTimer:
    """ASGI middleware: each HTTP request's duration by route and status, into `metrics`."""

    def __init__(self, app, metrics: GatewayMetrics, routes: Iterable[str]):
        self.app = app
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what a request that raised before answering is served as

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = scope.get("path", "")
            route = path if path in self.routes else OTHER_ROUTE
            self.metrics.request_seconds.labels(route, str(status)).observe(
                time.perf_counter() - started
            )
