"""The Stripe resource: configuration, and the StripeApi it builds (queue_pipelines/providers)."""

from __future__ import annotations

from pydantic import Field, PrivateAttr

from queue_pipelines.providers.stripe import StripeApi, documented_rate
from resources.provider_limits import ProviderLimits


class StripeResource(ProviderLimits):
    """Card payments and refunds on Stripe.

    Production: `secret_key=EnvVar("STRIPE_SECRET_KEY")` and no `api_base`. Sandbox:
    `api_base` at a localstripe server; the same SDK calls go there instead.

    With `redis`, every request takes a slot of a rate limit and passes a circuit breaker,
    both kept in that Redis and so shared by every run worker (providers/guard.py). Without
    `rate_limit`, the limit is Stripe's documented one for the key's mode (live 100/second,
    test 25/second).
    """

    secret_key: str = Field(description="Stripe secret key; pass it with EnvVar.")
    api_base: str | None = Field(
        default=None, description="API address override, for the localstripe sandbox only."
    )
    timeout_seconds: float = Field(default=30.0, description="Per-request timeout.")

    _api: StripeApi | None = PrivateAttr(default=None)

    @property
    def sandbox(self) -> bool:
        return self.api_base is not None

    def api(self) -> StripeApi:
        if self._api is None:
            self._api = StripeApi(
                self.secret_key,
                api_base=self.api_base,
                timeout_seconds=self.timeout_seconds,
                guard=self.provider_guard("stripe", documented_rate(self.secret_key)),
            )
        return self._api
