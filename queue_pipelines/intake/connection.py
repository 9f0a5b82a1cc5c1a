"""The one way this project connects to Redis: the intake, the sensors, the run workers, the
CLI and the gateway all build their client here."""

from __future__ import annotations

import redis


def redis_client(url: str, timeout_seconds: float = 10.0) -> redis.Redis:
    """Replies are decoded as UTF-8 with surrogateescape, so an entry holding other bytes is
    still read, and then rejected by validation, instead of failing every read of its
    stream (or the gateway's /metrics)."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        encoding_errors="surrogateescape",
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        health_check_interval=30,
    )
