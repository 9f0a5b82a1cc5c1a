"""The SMTP resource: configuration, and the SmtpSender it builds (queue_pipelines/providers)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from queue_pipelines.providers.guard import OFF
from queue_pipelines.providers.smtp import SmtpSender
from resources.provider_limits import ProviderLimits


class SmtpResource(ProviderLimits):
    """An SMTP server. Production: SMTP_HOST and friends, password with EnvVar. Locally: the
    outbox sink that `make run` starts on loopback (security "none").

    With `redis`, every try passes a circuit breaker shared by every run worker, and takes a
    slot of `rate_limit` when one is set (relays differ: none by default)."""

    host: str
    port: int = 587
    username: str | None = Field(default=None, description="pass it with EnvVar")
    password: str | None = Field(default=None, description="pass it with EnvVar")
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls (port 587), tls (implicit, 465), none"
    )
    tls_ca_file: str | None = Field(
        default=None, description="CA bundle for a server with a private CA (SMTP_TLS_CA_FILE)"
    )
    from_address: str = "Tickets <tickets@example.com>"
    timeout_seconds: float = 30.0
    sandbox: bool = Field(default=False, description="True for the local outbox sink")

    def sender(self) -> SmtpSender:
        return SmtpSender(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            security=self.security,
            tls_ca_file=self.tls_ca_file,
            from_address=self.from_address,
            timeout_seconds=self.timeout_seconds,
            sandbox=self.sandbox,
            guard=self.provider_guard("smtp", OFF),
        )
