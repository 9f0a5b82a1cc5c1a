"""The settings every resource that talks to a provider shares for its ProviderGuard: the
Redis that keeps the rate limit and the circuit breaker for all run workers, and both limits."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, field_validator

from queue_pipelines.providers.guard import ProviderGuard, check_rate
from resources.redis_intake import RedisResource


class ProviderLimits(dg.ConfigurableResource):
    redis: RedisResource | None = Field(
        default=None,
        description="Where the rate limit and the circuit breaker are kept; without it, "
        "neither applies.",
    )
    rate_limit: str | None = Field(
        default=None,
        description="Requests allowed to all workers together, e.g. '25/second'; 'off' for "
        "none; unset: the provider's default.",
    )
    breaker_fail_max: int = Field(
        default=5,
        ge=0,
        description="Consecutive transient failures that open the breaker; 0: no breaker.",
    )
    breaker_reset_seconds: float = Field(
        default=30.0, gt=0, description="How long an open breaker refuses calls."
    )

    @field_validator("rate_limit")
    @classmethod
    def _readable_rate(cls, rate: str | None) -> str | None:
        return rate if rate is None else check_rate(rate)

    def provider_guard(self, provider: str, default_rate: str) -> ProviderGuard | None:
        if self.redis is None:
            return None
        return ProviderGuard(
            self.redis.client(),
            provider,
            rate=self.rate_limit or default_rate,
            fail_max=self.breaker_fail_max,
            reset_timeout=self.breaker_reset_seconds,
            keys=self.redis.redis_keys(),
        )
