"""`queue-pipelines gateway`: read the settings, refuse to start without a key, serve."""

from __future__ import annotations

import logging
import os
import sys

from queue_pipelines.gateway.config import GatewayConfigError, GatewaySettings, settings_from_env
from queue_pipelines.settings import SandboxSecretError, load


def server_config(app, settings: GatewaySettings, host: str, port: int, **extra):
    """uvicorn with the gateway's HTTP limits: h11 (whose parser caps the header block), a
    deadline for each request head, short keep-alives, and a cap on open connections that
    drops idle and slow ones first (gateway/connections.py)."""
    import uvicorn

    from queue_pipelines.gateway.connections import limited_h11_protocol

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=limited_h11_protocol(settings.header_timeout_seconds, settings.max_connections),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=settings.keepalive_timeout_seconds,
        **{"access_log": False, **extra},
    )


async def serve_all(configs) -> None:
    """Every server in one event loop: the public port and, when set, the metrics port."""
    import asyncio

    import uvicorn

    servers = [uvicorn.Server(config) for config in configs]
    await asyncio.gather(*(server.serve() for server in servers))


# Seconds a Redis command may take before the request that needs it answers 503.
REDIS_TIMEOUT_SECONDS = 5.0


def gateway_redis_client(url: str):
    """The project's one Redis client configuration (`intake.connection.redis_client`): replies
    that are not UTF-8 are read with surrogateescape, so one bad stream entry cannot make
    /metrics or the probes answer 500."""
    from queue_pipelines.intake.connection import redis_client

    return redis_client(url, REDIS_TIMEOUT_SECONDS)


def run_gateway(host: str, port: int, redis_url: str | None = None, prefix: str = "qp") -> int:
    from queue_pipelines.logs import configure_logging, plain_logging

    try:
        settings = settings_from_env(key_prefix=prefix)
        config = load()
        config.refuse_sandbox_secrets()
    except (GatewayConfigError, SandboxSecretError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Imported after the settings check so that a refusal is quick.
    import asyncio

    import dagster as dg

    from queue_pipelines.gateway.app import build_app, build_metrics_app

    json_logs = configure_logging()
    if not json_logs:
        plain_logging()
    log = logging.getLogger("queue_pipelines.gateway")
    if not settings.stripe_webhook_secret:
        log.warning("STRIPE_WEBHOOK_SECRET is unset: /v1/webhooks/stripe answers 503")
    if settings.metrics_port is None and not settings.metrics_token:
        log.warning(
            "/metrics* are open on the public port: set GATEWAY_METRICS_TOKEN or "
            "GATEWAY_METRICS_PORT (docs/gateway.md)"
        )
    home = config.home.resolve()
    # DagsterInstance.get() below reads DAGSTER_HOME itself: hand it the same home.
    os.environ.setdefault("DAGSTER_HOME", str(home))
    home.mkdir(parents=True, exist_ok=True)
    client = gateway_redis_client(redis_url or config.intake_redis_url)
    log_config = {"log_config": None} if json_logs else {}
    with dg.DagsterInstance.get() as instance:
        app = build_app(settings, client, instance)
        configs = [server_config(app, settings, host, port, log_level="info", **log_config)]
        if settings.metrics_port is not None:
            configs.append(
                server_config(
                    build_metrics_app(app),
                    settings,
                    host,
                    settings.metrics_port,
                    log_level="info",
                    lifespan="off",
                    **log_config,
                )
            )
        asyncio.run(serve_all(configs))
    return 0
