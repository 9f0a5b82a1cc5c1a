"""Configurable resources: each one interface, with a production and a sandbox/embedded backend."""

from resources.effect_ledger import EffectLedgerResource
from resources.metadata_store import MetadataStoreResource
from resources.notification_settings import NotificationSettingsResource
from resources.notifier import NotifierResource
from resources.redis_intake import RedisResource
from resources.smtp import SmtpResource
from resources.solana import SolanaResource
from resources.stripe_api import StripeResource
from resources.webhooks import WebhookResource

__all__ = [
    "EffectLedgerResource",
    "MetadataStoreResource",
    "NotificationSettingsResource",
    "NotifierResource",
    "RedisResource",
    "SmtpResource",
    "SolanaResource",
    "StripeResource",
    "WebhookResource",
]
