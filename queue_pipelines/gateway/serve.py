"""`queue-pipelines gateway`: read the settings, refuse to start without a key, serve."""

from __future__ import annotations

import os
import sys

from queue_pipelines import settings as embedded
from queue_pipelines.gateway.config import GatewayConfigError, settings_from_env


def run_gateway(host: str, port: int, redis_url: str | None = None, prefix: str = "qp") -> int:
    try:
        settings = settings_from_env(key_prefix=prefix)
    except GatewayConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Imported after the settings check so that a refusal is quick.
    import dagster as dg
    import redis
    import uvicorn

    from queue_pipelines.gateway.app import build_app

    if not settings.stripe_webhook_secret:
        print(
            "warning: STRIPE_WEBHOOK_SECRET is unset: /v1/webhooks/stripe answers 503",
            file=sys.stderr,
        )
    home = embedded.dagster_home().resolve()
    os.environ.setdefault("DAGSTER_HOME", str(home))
    home.mkdir(parents=True, exist_ok=True)
    client = redis.Redis.from_url(
        redis_url or embedded.redis_url(),
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
    with dg.DagsterInstance.get() as instance:
        app = build_app(settings, client, instance)
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
    return 0
