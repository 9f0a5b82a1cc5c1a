"""The gateway app served by uvicorn on loopback, in a thread of the test process, with the
same server settings (HTTP limits) as `queue-pipelines gateway`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from queue_pipelines.gateway.config import GatewaySettings, JWTSettings
from queue_pipelines.gateway.serve import server_config
from queue_pipelines.sandbox.servers import free_port

_DEFAULTS = GatewaySettings(
    jwt=JWTSettings(algorithm="HS256", key="d" * 32), stripe_webhook_secret=None
)


@contextmanager
def serve(app, settings: GatewaySettings | None = None, **extra) -> Iterator[str]:
    port = free_port()
    config = server_config(
        app,
        settings or _DEFAULTS,
        "127.0.0.1",
        port,
        **{"log_level": "warning", "lifespan": "on", **extra},
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
