"""Configurable resources: each one interface, with a production and a sandbox/embedded backend."""

from resources.effect_ledger import EffectLedgerResource
from resources.redis_intake import RedisResource
from resources.stripe_api import StripeResource

__all__ = ["EffectLedgerResource", "RedisResource", "StripeResource"]
