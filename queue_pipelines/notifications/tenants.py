"""Per-tenant branding and webhook endpoints, from a JSON file (QP_TENANTS_FILE).

{"acme": {"name": "Acme Tickets", "colour": "#d03030", "support_email": "help@acme.test",
          "webhooks": {"payment": "https://acme.test/hooks/payment"}}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError

from queue_pipelines.intake.registry import WEBHOOK_KINDS

WebhookKind = Literal[WEBHOOK_KINDS]  # type: ignore[valid-type]  # the registry's kinds


class TenantProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="Tickets", min_length=1, max_length=100)
    # A strict colour form: it lands in an HTML style attribute.
    colour: str = Field(default="#1f6feb", pattern=r"^#[0-9A-Fa-f]{6}$")
    support_email: EmailStr = "support@example.com"
    webhooks: dict[WebhookKind, str] = Field(default_factory=dict)


DEFAULT_PROFILE = TenantProfile()


class TenantDirectory:
    """The profiles of every configured tenant; the default profile for the rest."""

    def __init__(self, profiles: dict[str, TenantProfile] | None = None):
        self.profiles = profiles or {}

    @classmethod
    def from_file(cls, path: str | Path | None) -> TenantDirectory:
        if not path:
            return cls()
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls({tenant: TenantProfile.model_validate(v) for tenant, v in raw.items()})
        except (OSError, json.JSONDecodeError, ValidationError, AttributeError) as exc:
            raise ValueError(f"tenant profiles in {path} are not usable: {exc}") from exc

    def profile(self, tenant_id: str) -> TenantProfile:
        return self.profiles.get(tenant_id, DEFAULT_PROFILE)
