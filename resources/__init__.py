"""Configurable resources: each one interface, with a production and a sandbox/embedded backend."""

from resources.effect_ledger import EffectLedgerResource
from resources.metadata_store import MetadataStoreResource
from resources.redis_intake import RedisResource
from resources.solana import SolanaResource
from resources.stripe_api import StripeResource

__all__ = [
    "EffectLedgerResource",
    "MetadataStoreResource",
    "RedisResource",
    "SolanaResource",
    "StripeResource",
]
