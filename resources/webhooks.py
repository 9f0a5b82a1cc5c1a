"""The webhook resource: endpoints and secret, and the WebhookSender it builds."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from queue_pipelines.notifications.tenants import TenantProfile
from queue_pipelines.providers.webhooks import WebhookSender


class WebhookResource(dg.ConfigurableResource):
    """One endpoint per event kind (a tenant's profile may override it), one signing secret."""

    secret: str = Field(description="whsec_... signing secret; pass it with EnvVar")
    payment_url: str | None = None
    refund_url: str | None = None
    nft_url: str | None = None
    timeout_seconds: float = Field(default=15.0, description="the spec suggests 15 to 30 s")
    sandbox: bool = False

    def url_for(self, kind: str, profile: TenantProfile) -> str | None:
        return profile.webhooks.get(kind) or getattr(self, f"{kind}_url")

    def sender(self) -> WebhookSender:
        return WebhookSender(secret=self.secret, timeout_seconds=self.timeout_seconds)
