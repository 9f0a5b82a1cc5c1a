"""`queue-pipelines gateway token`: a short-lived HS256 token for trying the gateway locally.
Production tokens come from the platform's identity provider, not from here."""

from __future__ import annotations

import time

import jwt

from queue_pipelines.gateway.auth import SCOPE_ALL_JOBS
from queue_pipelines.gateway.config import GatewayConfigError, jwt_settings
from queue_pipelines.settings import Settings

# A token without a scope claim writes nothing (unless GATEWAY_JWT_UNSCOPED_TOKENS=allow).
DEFAULT_SCOPE = SCOPE_ALL_JOBS


def make_token(secret: str, tenant: str, scope: str | None = DEFAULT_SCOPE, ttl: int = 3600) -> str:
    now = int(time.time())
    claims: dict = {"tenant": tenant, "iat": now, "exp": now + ttl, "sub": "queue-pipelines-cli"}
    if scope:
        claims["scope"] = scope
    return jwt.encode(claims, secret, algorithm="HS256")


def print_token(tenant: str, scope: str | None, ttl: int, out, err, config: Settings) -> int:
    try:
        settings = jwt_settings(config)
    except GatewayConfigError as exc:
        print(f"error: {exc}", file=err)
        return 2
    if settings.algorithm != "HS256":
        print("error: with RS256 the gateway holds only the public key: sign elsewhere", file=err)
        return 2
    if ttl > settings.max_lifetime_seconds:
        print(
            f"error: --ttl {ttl} is over the {settings.max_lifetime_seconds} s the gateway "
            "accepts (GATEWAY_JWT_MAX_LIFETIME_SECONDS)",
            file=err,
        )
        return 2
    print(make_token(settings.key, tenant, scope, ttl), file=out)
    return 0
