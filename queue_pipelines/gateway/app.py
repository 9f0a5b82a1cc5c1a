"""The gateway's HTTP app: job intake, Stripe webhooks, probes, and metrics (open, behind a
bearer token, or on a port of their own: `build_metrics_app`)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging

import dagster as dg
import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from queue_pipelines.gateway.auth import AuthError, bearer_token, verify
from queue_pipelines.gateway.config import GatewaySettings
from queue_pipelines.gateway.health import HealthChecks
from queue_pipelines.gateway.stripe_webhooks import WebhookRejected, event_envelope, verify_event
from queue_pipelines.gateway.tenant_limits import TenantGate, TenantRefused
from queue_pipelines.intake.registry import SPECS
from queue_pipelines.intake.schema import EnvelopeError, envelope_from_dict
from queue_pipelines.intake.streams import IntakeStreams
from queue_pipelines.logs import AccessLogMiddleware
from queue_pipelines.metrics.collector import QueueMetricsCollector, build_registry
from queue_pipelines.metrics.gateway import GatewayMetrics, RequestTimer
from queue_pipelines.metrics.system import SystemUsage

log = logging.getLogger("queue_pipelines.gateway")


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


def _error(status: int, message: str, **extra) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="queue-pipelines"'} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body within `timeout` seconds (a body that never finishes arriving would
    otherwise hold its connection and a worker forever)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()

    async def read() -> None:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise BodyTooLarge

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise BodyTimeout from None
    return bytes(body)


def _body_error(exc: Exception, settings: GatewaySettings) -> JSONResponse:
    if isinstance(exc, BodyTimeout):
        reply = _error(408, f"the body did not arrive within {settings.body_timeout_seconds:g} s")
    else:
        reply = _error(413, f"body over the {settings.max_body_bytes}-byte limit")
    # The rest of the body is not read: the connection ends here rather than wait for it.
    reply.headers["Connection"] = "close"
    return reply


def _refused(exc: TenantRefused) -> JSONResponse:
    reply = _error(exc.status, exc.reason, **exc.extra)
    if exc.retry_after is not None:
        reply.headers["Retry-After"] = str(exc.retry_after)
    return reply


def _bearer_matches(authorization: str | None, token: str) -> bool:
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class HeaderLimit:
    """431 for a request whose header block is over the cap. uvicorn's h11 parser already
    refuses a header block that is still incomplete past the cap (so a 32 MB header is never
    buffered); one that arrived whole in a single read is refused here."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.limit:
                reply = _error(431, f"request headers over the {self.limit}-byte limit")
                await reply(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _families_as_json(registry) -> dict:
    out = {}
    for family in registry.collect():
        out[family.name] = {
            "type": family.type,
            "help": family.documentation,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples
            ],
        }
    return out


def build_app(
    settings: GatewaySettings, client: redis.Redis, instance: dg.DagsterInstance
) -> Starlette:
    streams = IntakeStreams(client, prefix=settings.key_prefix)
    tenant_gate = TenantGate(settings.tenant_limits, client, streams.keys)
    health = HealthChecks(client, instance)
    collector = QueueMetricsCollector(instance, streams)
    system = SystemUsage()
    counted = GatewayMetrics()
    registry = build_registry(collector, system, counted.registry)

    async def submit_job(request: Request) -> Response:
        try:
            caller = verify(bearer_token(request.headers.get("authorization")), settings.jwt)
        except AuthError as exc:
            counted.auth_refused(exc.code)
            return _error(exc.status, exc.reason)
        job_type = None  # until the envelope is read

        def refused(result: str, reply: Response) -> Response:
            counted.job_request(job_type, result)
            return reply

        try:
            # Every request of the tenant counts, the invalid ones too.
            await run_in_threadpool(tenant_gate.hit, caller.tenant)
        except TenantRefused as exc:
            return refused("tenant_limit", _refused(exc))
        except redis.RedisError as exc:
            log.error("intake Redis unavailable: %s", exc)
            return refused(
                "unavailable",
                _error(503, "the intake is unavailable; retry with the same idempotency key"),
            )
        try:
            body = await _read_body(request, settings.max_body_bytes, settings.body_timeout_seconds)
        except (BodyTooLarge, BodyTimeout) as exc:
            return refused("body", _body_error(exc, settings))
        if not _is_json(request.headers.get("content-type")):
            return refused("not_json", _error(415, "send the envelope as application/json"))
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return refused("not_json", _error(415, f"body is not JSON: {exc}"))
        except (ValueError, RecursionError) as exc:  # 5,000-digit numbers, absurd nesting
            return refused(
                "invalid",
                _error(400, "invalid envelope", reason=f"unreadable JSON: {str(exc)[:200]}"),
            )
        try:
            envelope = envelope_from_dict(data)
        except EnvelopeError as exc:
            return refused(
                "invalid", _error(400, "invalid envelope", reason=exc.reason, fields=exc.problems)
            )
        job_type = envelope.type
        if not SPECS[envelope.type].tenant_submittable:  # it enters by a verified route
            return refused(
                "not_accepted_here",
                _error(
                    403,
                    f"job type {envelope.type!r} is not accepted here: "
                    f"{SPECS[envelope.type].tenant_refusal}",
                ),
            )
        try:
            caller.authorize(envelope.tenant_id, envelope.type, settings.jwt.allow_unscoped)
        except AuthError as exc:
            counted.auth_refused(exc.code)
            return _error(exc.status, exc.reason)
        try:
            tenant_gate.check_priority(caller.tenant, envelope.priority, caller.operator)
            # A notification counts against its tenant's daily e-mail quota.
            result = await run_in_threadpool(tenant_gate.enqueue, streams, envelope)
        except TenantRefused as exc:
            return refused("tenant_limit", _refused(exc))
        except EnvelopeError as exc:  # the stored form is over the size limit
            return refused("too_large", _error(413, "envelope too large", reason=exc.reason))
        except redis.RedisError as exc:
            log.error("intake Redis unavailable: %s", exc)
            return refused(
                "unavailable",
                _error(503, "the intake is unavailable; retry with the same idempotency key"),
            )
        if result.conflict:
            return refused(
                "conflict",
                _error(
                    409,
                    "this idempotency key was already used for a different request",
                    entry_id=result.entry_id,
                    request_key=result.request_key,
                ),
            )
        counted.job_request(job_type, "duplicate" if result.duplicate else "accepted")
        return JSONResponse(
            {
                "entry_id": result.entry_id,
                "request_key": result.request_key,
                "duplicate": result.duplicate,
            },
            status_code=202,
        )

    async def stripe_webhook(request: Request) -> Response:
        event: dict = {}  # its type is known once the signature verifies

        def answered(result: str, reply: Response) -> Response:
            counted.stripe_event(event.get("type"), result)
            return reply

        if not settings.stripe_webhook_secret:
            return answered(
                "disabled", _error(503, "STRIPE_WEBHOOK_SECRET is not set: Stripe webhooks are off")
            )
        try:
            body = await _read_body(request, settings.max_body_bytes, settings.body_timeout_seconds)
        except (BodyTooLarge, BodyTimeout) as exc:
            return answered("body", _body_error(exc, settings))
        try:
            event = verify_event(
                body,
                request.headers.get("stripe-signature"),
                settings.stripe_webhook_secret,
                settings.stripe_tolerance_seconds,
            )
            envelope = event_envelope(event)
        except WebhookRejected as exc:
            return answered("rejected", _error(400, exc.reason))
        except EnvelopeError as exc:
            return answered(
                "invalid",
                _error(400, "event does not fit the stripe_event payload", reason=exc.reason),
            )
        if envelope is None:
            # Acknowledged so that Stripe stops resending an event nobody here reconciles.
            return answered(
                "ignored", JSONResponse({"received": True, "ignored": event.get("type")})
            )
        try:
            result = await run_in_threadpool(streams.enqueue_once, envelope)
        except EnvelopeError as exc:
            return answered(
                "too_large", _error(413, "event too large for the intake", reason=exc.reason)
            )
        except redis.RedisError as exc:
            log.error("intake Redis unavailable: %s", exc)
            return answered("unavailable", _error(503, "the intake is unavailable"))
        if result.conflict:
            return answered(
                "conflict",
                _error(
                    409,
                    "this event id was already enqueued with other content",
                    entry_id=result.entry_id,
                ),
            )
        counted.stripe_event(event.get("type"), "duplicate" if result.duplicate else "enqueued")
        return JSONResponse(
            {"received": True, "entry_id": result.entry_id, "duplicate": result.duplicate}
        )

    async def live(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def ready(_: Request) -> Response:
        ok, body = await run_in_threadpool(health.ready)
        return JSONResponse(body, status_code=200 if ok else 503)

    async def startup(_: Request) -> Response:
        ok, body = await run_in_threadpool(health.startup, collector.run_totals.warm)
        return JSONResponse(body, status_code=200 if ok else 503)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        collector.run_totals.warm_up()
        yield
        health.close()

    routes = [
        Route("/v1/jobs", submit_job, methods=["POST"]),
        Route("/v1/webhooks/stripe", stripe_webhook, methods=["POST"]),
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/health/startup", startup),
    ]
    metrics = metrics_routes(settings, registry, streams, system, counted)
    if settings.metrics_port is None:
        routes += metrics
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            AccessLogMiddleware.entry(),
            Middleware(RequestTimer, metrics=counted, routes=[r.path for r in routes]),
            Middleware(HeaderLimit, limit=settings.max_header_bytes),
        ],
    )
    app.state.metrics_routes = metrics
    return app


def metrics_routes(
    settings: GatewaySettings,
    registry,
    streams: IntakeStreams,
    system: SystemUsage,
    counted: GatewayMetrics,
) -> list[Route]:
    """/metrics, /metrics/json, /metrics/queue-stats and /metrics/system, each behind
    `Authorization: Bearer <GATEWAY_METRICS_TOKEN>` when a token is configured."""

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            token = settings.metrics_token
            if token and not _bearer_matches(request.headers.get("authorization"), token):
                counted.auth_refused("metrics_token")
                return _error(401, "metrics need 'Authorization: Bearer <metrics token>'")
            return await handler(request)

        return endpoint

    async def metrics(_: Request) -> Response:
        text = await run_in_threadpool(generate_latest, registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def metrics_json(_: Request) -> Response:
        return JSONResponse(await run_in_threadpool(_families_as_json, registry))

    async def queue_stats(_: Request) -> Response:
        try:
            stats = await run_in_threadpool(streams.stats)
        except redis.RedisError as exc:
            return _error(503, f"the intake Redis did not answer: {exc}")
        return JSONResponse(stats.as_dict())

    async def system_usage(_: Request) -> Response:
        return JSONResponse(system.sample().as_dict())

    return [
        Route("/metrics", guarded(metrics)),
        Route("/metrics/json", guarded(metrics_json)),
        Route("/metrics/queue-stats", guarded(queue_stats)),
        Route("/metrics/system", guarded(system_usage)),
    ]


def build_metrics_app(app: Starlette) -> Starlette:
    """The metrics routes of `app` (built with a metrics_port) as an app of their own, for the
    port that only Prometheus reaches."""
    return Starlette(routes=app.state.metrics_routes, middleware=[AccessLogMiddleware.entry()])
