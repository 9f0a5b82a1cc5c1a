"""Log output: plain text (default) or one JSON object per line (QP_LOG_FORMAT=json), for the
gateway and the code location; and the gateway's access log.

Neither ever holds a secret: the access log has no headers and no query string (a receiver's
token may ride in either), and the JSON formatter masks what looks like a bearer token, a
JWT, a Stripe key or a webhook secret wherever it appears in a message.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime

from starlette.middleware import Middleware

from queue_pipelines.settings import load

ACCESS_LOGGER = "queue_pipelines.gateway.access"

_SECRETS = re.compile(
    r"(?i:bearer\s+)[A-Za-z0-9._~+/=-]+"  # Authorization values
    r"|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"  # JWTs
    r"|\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9_]+"  # Stripe secret and restricted keys
    r"|\bwhsec_[A-Za-z0-9+/=_]+"  # webhook signing secrets
)
# Attributes every LogRecord has; anything else was passed with `extra=` and is kept.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    return _SECRETS.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    """One object per line: time, level, logger, message, and any `extra=` fields
    (request_id, run_id, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def json_logs_requested(env: dict[str, str] | None = None) -> bool:
    """QP_LOG_FORMAT=json in `env` (default: this process's environment)."""
    return (load(env).qp_log_format or "").strip().lower() == "json"


def configure_logging(env: dict[str, str] | None = None, stream=None) -> bool:
    """With QP_LOG_FORMAT=json, every record of this process (ours, uvicorn's, Dagster's
    Python loggers) goes out as JSON on stderr; returns whether it did."""
    if not json_logs_requested(env):
        return False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "dagster"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    return True


def plain_logging(name: str = "queue_pipelines", stream=None) -> None:
    """Plain text (the default): this project's records from INFO up, the gateway's access log
    among them, one line each on stderr beside uvicorn's own. Without it Python shows only
    warnings, so the access log would never be seen."""
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


class AccessLogMiddleware:
    """One line per HTTP request: method, path (no query string), status, duration, client,
    and a request id (the caller's X-Request-ID when it is sane, else a new one), which the
    response carries back in X-Request-ID. No header value is logged."""

    def __init__(self, app, logger: logging.Logger | None = None):
        self.app = app
        self.log = logger or logging.getLogger(ACCESS_LOGGER)

    @classmethod
    def entry(cls) -> Middleware:
        return Middleware(cls)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", given) else uuid.uuid4().hex
        started = time.perf_counter()
        status = 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers") or [])
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            client = scope.get("client")
            self.log.info(
                "%s %s %s",
                scope.get("method"),
                scope.get("path"),
                status,
                extra={
                    "request_id": request_id,
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "client": client[0] if client else None,
                },
            )
