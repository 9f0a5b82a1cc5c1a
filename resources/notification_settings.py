"""Who is told what: tenant branding and endpoints, the operators' address, explorer links."""

import dagster as dg
from pydantic import Field, PrivateAttr

from queue_pipelines.notifications.tenants import TenantDirectory, TenantProfile


class NotificationSettingsResource(dg.ConfigurableResource):
    tenants_file: str | None = Field(
        default=None, description="JSON file of tenant profiles (QP_TENANTS_FILE)"
    )
    operator_email: str = Field(
        default="operators@example.com", description="where operator alerts go (OPERATOR_EMAIL)"
    )
    explorer_url_template: str = Field(
        default="https://explorer.solana.com/address/{address}",
        description="link to a minted NFT; {address} is the mint address (EXPLORER_URL_TEMPLATE)",
    )

    _directory: TenantDirectory | None = PrivateAttr(default=None)

    def profile(self, tenant_id: str) -> TenantProfile:
        if self._directory is None:
            self._directory = TenantDirectory.from_file(self.tenants_file)
        return self._directory.profile(tenant_id)
