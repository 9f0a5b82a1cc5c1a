"""The Stripe resource: configuration, and the StripeApi it builds (queue_pipelines/providers)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, PrivateAttr, field_validator

from queue_pipelines.providers.guard import ProviderGuard, check_rate
from queue_pipelines.providers.stripe import StripeApi, documented_rate
from resources.redis_intake import RedisResource


class StripeResource(dg.ConfigurableResource):
    """Card payments and refunds on Stripe.

    Production: `secret_key=EnvVar("STRIPE_SECRET_KEY")` and no `api_base`. Sandbox:
    `api_base` at a localstripe server; the same SDK calls go there instead.

    With `redis`, every request takes a slot of a rate limit and passes a circuit breaker,
    both kept in that Redis and so shared by every run worker (providers/guard.py).
    """

    secret_key: str = Field(description="Stripe secret key; pass it with EnvVar.")
    api_base: str | None = Field(
        default=None, description="API address override, for the localstripe sandbox only."
    )
    max_network_retries: int = Field(
        default=2,
        description="SDK-level retries of connection errors and 409/5xx replies, "
        "with the same idempotency key.",
    )
    timeout_seconds: float = Field(default=30.0, description="Per-request timeout.")
    redis: RedisResource | None = Field(
        default=None,
        description="Where the rate limit and the circuit breaker are kept; without it, "
        "neither applies.",
    )
    rate_limit: str | None = Field(
        default=None,
        description="Requests allowed to all workers together, e.g. '25/second'; 'off' for "
        "none; unset: Stripe's documented limit for the key's mode (live 100/second, "
        "test 25/second).",
    )
    breaker_fail_max: int = Field(
        default=5,
        ge=0,
        description="Consecutive transient failures that open the breaker; 0: no breaker.",
    )
    breaker_reset_seconds: float = Field(
        default=30.0, gt=0, description="How long an open breaker refuses calls."
    )

    _api: StripeApi | None = PrivateAttr(default=None)

    @field_validator("rate_limit")
    @classmethod
    def _readable_rate(cls, rate: str | None) -> str | None:
        return rate if rate is None else check_rate(rate)

    @property
    def sandbox(self) -> bool:
        return self.api_base is not None

    def _guard(self) -> ProviderGuard | None:
        if self.redis is None:
            return None
        return ProviderGuard(
            self.redis.client(),
            "stripe",
            rate=self.rate_limit or documented_rate(self.secret_key),
            fail_max=self.breaker_fail_max,
            reset_timeout=self.breaker_reset_seconds,
            key_prefix=self.redis.key_prefix,
        )

    def api(self) -> StripeApi:
        if self._api is None:
            self._api = StripeApi(
                self.secret_key,
                api_base=self.api_base,
                max_network_retries=self.max_network_retries,
                timeout_seconds=self.timeout_seconds,
                guard=self._guard(),
            )
        return self._api
