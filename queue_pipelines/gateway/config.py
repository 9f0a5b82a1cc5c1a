"""The gateway's settings, from the environment. A missing key is an error, never a default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from queue_pipelines.gateway.tenant_limits import (
    TenantLimits,
    TenantLimitsError,
    tenant_limits_from_env,
)

DEFAULT_MAX_BODY_BYTES = 64 * 1024
# A request's headers together; uvicorn's own default has no cap (a 32 MB header was read).
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
# A body that has not fully arrived after this long is answered 408 (slow-body clients).
DEFAULT_BODY_TIMEOUT_SECONDS = 10.0
# Open connections at once. At the cap, the one that has waited longest for a request head
# (idle or slow) is closed to make room; only when all hold a request in progress is a new
# request answered 503 (gateway/connections.py).
DEFAULT_MAX_CONNECTIONS = 256
# A request head (request line and headers) must arrive within this long of the connection
# opening, or of the next request's first byte on a kept-alive connection; else it is closed.
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
# A kept-alive connection with no next request after this long is closed.
DEFAULT_KEEPALIVE_TIMEOUT_SECONDS = 5.0
ALGORITHMS = ("HS256", "RS256")
# RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
MIN_HS256_SECRET_BYTES = 32
# A bearer token for /metrics*: 16 random bytes (128 bits) at least.
MIN_METRICS_TOKEN_BYTES = 16
# The longest a bearer token may live (exp - iat, or exp - now without iat).
DEFAULT_MAX_TOKEN_LIFETIME_SECONDS = 24 * 3600
# GATEWAY_JWT_UNSCOPED_TOKENS: what a token without a scope claim may write.
UNSCOPED_TOKENS = ("refuse", "allow")


class GatewayConfigError(Exception):
    """Start-up refused: the message names the variable to set."""


@dataclass(frozen=True)
class JWTSettings:
    algorithm: str  # exactly one, pinned
    key: str  # HS256: the shared secret; RS256: the PEM public key
    audience: str | None = None
    issuer: str | None = None
    # A token without a scope claim writes nothing unless this is set (the operator opted in
    # with GATEWAY_JWT_UNSCOPED_TOKENS=allow): then it may write every job type it could
    # write with `jobs:write`.
    allow_unscoped: bool = False
    leeway_seconds: int = 30
    # A token that lives longer than this is refused, even if correctly signed.
    max_lifetime_seconds: int = DEFAULT_MAX_TOKEN_LIFETIME_SECONDS


@dataclass(frozen=True)
class GatewaySettings:
    jwt: JWTSettings
    stripe_webhook_secret: str | None
    stripe_tolerance_seconds: int = 300
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    key_prefix: str = "qp"
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS
    keepalive_timeout_seconds: float = DEFAULT_KEEPALIVE_TIMEOUT_SECONDS
    # /metrics*: behind `Authorization: Bearer <metrics_token>` when set; on a port of their
    # own (and off the public one) when metrics_port is set.
    metrics_token: str | None = None
    metrics_port: int | None = None
    # Per-tenant request rate, daily e-mail quota and priority range (tenant_limits.py).
    tenant_limits: TenantLimits = field(default_factory=TenantLimits)

    def __post_init__(self):
        # The stripe SDK treats a tolerance of 0 as "no replay check at all".
        if self.stripe_tolerance_seconds <= 0:
            raise GatewayConfigError(
                "STRIPE_WEBHOOK_TOLERANCE_SECONDS must be a positive number of seconds "
                f"(got {self.stripe_tolerance_seconds}): 0 or less would switch the replay "
                "check off"
            )


def _number(env: dict[str, str], name: str, default, kind=int, minimum=1):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise GatewayConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise GatewayConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _unscoped_tokens(env: dict[str, str]) -> str:
    value = (env.get("GATEWAY_JWT_UNSCOPED_TOKENS") or "refuse").strip().lower()
    if value not in UNSCOPED_TOKENS:
        raise GatewayConfigError(
            f"GATEWAY_JWT_UNSCOPED_TOKENS={value!r}: use 'refuse' (the default: a token without "
            "a scope claim writes nothing) or 'allow'"
        )
    return value


def jwt_settings_from_env(env: dict[str, str]) -> JWTSettings:
    algorithm = env.get("GATEWAY_JWT_ALGORITHM", "HS256").strip().upper()
    if algorithm not in ALGORITHMS:
        raise GatewayConfigError(
            f"GATEWAY_JWT_ALGORITHM={algorithm!r} is not supported: use HS256 or RS256"
        )
    if algorithm == "HS256":
        key = env.get("GATEWAY_JWT_SECRET", "")
        if not key:
            raise GatewayConfigError(
                "GATEWAY_JWT_SECRET is not set: the gateway verifies HS256 bearer tokens with "
                "it and will not start without it (or set GATEWAY_JWT_ALGORITHM=RS256 and "
                "GATEWAY_JWT_PUBLIC_KEY)"
            )
        if len(key.encode()) < MIN_HS256_SECRET_BYTES:
            raise GatewayConfigError(
                f"GATEWAY_JWT_SECRET is shorter than {MIN_HS256_SECRET_BYTES} bytes: too weak "
                "for HS256"
            )
    else:
        key = env.get("GATEWAY_JWT_PUBLIC_KEY", "")
        if not key and env.get("GATEWAY_JWT_PUBLIC_KEY_FILE"):
            key = Path(env["GATEWAY_JWT_PUBLIC_KEY_FILE"]).read_text()
        if "BEGIN PUBLIC KEY" not in key:
            raise GatewayConfigError(
                "GATEWAY_JWT_PUBLIC_KEY (or GATEWAY_JWT_PUBLIC_KEY_FILE) must hold the PEM "
                "public key that verifies RS256 bearer tokens; the gateway will not start "
                "without it"
            )
    return JWTSettings(
        algorithm=algorithm,
        key=key,
        audience=env.get("GATEWAY_JWT_AUDIENCE") or None,
        issuer=env.get("GATEWAY_JWT_ISSUER") or None,
        allow_unscoped=_unscoped_tokens(env) == "allow",
        max_lifetime_seconds=_number(
            env, "GATEWAY_JWT_MAX_LIFETIME_SECONDS", DEFAULT_MAX_TOKEN_LIFETIME_SECONDS
        ),
    )


def unsafe_secrets(env: dict[str, str]) -> dict[str, str]:
    """Each secret the gateway will not start with: {name: why}, never its value. Any
    secret holding a placeholder (CHANGE-ME) or an example value from deploy/, an HS256 key
    under 32 bytes, a metrics token under 16 bytes. In every mode: the gateway has no sandbox
    value of its own to fall back to, and a token signed with a published key is anyone's."""
    from queue_pipelines.env_vars import placeholder_secrets

    why = dict.fromkeys(placeholder_secrets(env), "a placeholder or an example value from deploy/")
    hs256 = env.get("GATEWAY_JWT_ALGORITHM", "HS256").strip().upper() == "HS256"
    secret = env.get("GATEWAY_JWT_SECRET") or ""
    if hs256 and secret and len(secret.encode()) < MIN_HS256_SECRET_BYTES:
        why.setdefault("GATEWAY_JWT_SECRET", f"shorter than {MIN_HS256_SECRET_BYTES} bytes")
    token = env.get("GATEWAY_METRICS_TOKEN") or ""
    if token and len(token.encode()) < MIN_METRICS_TOKEN_BYTES:
        why.setdefault("GATEWAY_METRICS_TOKEN", f"shorter than {MIN_METRICS_TOKEN_BYTES} bytes")
    return why


def refuse_unsafe_secrets(env: dict[str, str]) -> None:
    by_reason: dict[str, list[str]] = {}
    for name, reason in unsafe_secrets(env).items():
        by_reason.setdefault(reason, []).append(name)
    if by_reason:
        raise GatewayConfigError(
            "refusing to start with unsafe secrets: "
            + "; ".join(f"{', '.join(names)}: {reason}" for reason, names in by_reason.items())
            + f". Set values of your own: {MIN_HS256_SECRET_BYTES}+ random bytes for "
            f"GATEWAY_JWT_SECRET, {MIN_METRICS_TOKEN_BYTES}+ for GATEWAY_METRICS_TOKEN "
            "(docs/gateway.md)"
        )


def settings_from_env(env: dict[str, str] | None = None, key_prefix: str = "qp") -> GatewaySettings:
    env = dict(os.environ if env is None else env)
    refuse_unsafe_secrets(env)
    return GatewaySettings(
        jwt=jwt_settings_from_env(env),
        stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET") or None,
        stripe_tolerance_seconds=_number(
            env, "STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300, minimum=-(2**31)
        ),
        max_body_bytes=_number(env, "GATEWAY_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
        key_prefix=env.get("QUEUE_KEY_PREFIX") or key_prefix,
        max_header_bytes=_number(env, "GATEWAY_MAX_HEADER_BYTES", DEFAULT_MAX_HEADER_BYTES),
        body_timeout_seconds=_number(
            env, "GATEWAY_BODY_TIMEOUT_SECONDS", DEFAULT_BODY_TIMEOUT_SECONDS, kind=float
        ),
        max_connections=_number(env, "GATEWAY_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS),
        header_timeout_seconds=_number(
            env, "GATEWAY_HEADER_TIMEOUT_SECONDS", DEFAULT_HEADER_TIMEOUT_SECONDS, kind=float
        ),
        keepalive_timeout_seconds=_number(
            env, "GATEWAY_KEEPALIVE_TIMEOUT_SECONDS", DEFAULT_KEEPALIVE_TIMEOUT_SECONDS, kind=float
        ),
        metrics_token=env.get("GATEWAY_METRICS_TOKEN") or None,
        metrics_port=_number(env, "GATEWAY_METRICS_PORT", None),
        tenant_limits=_tenant_limits(env),
    )


def _tenant_limits(env: dict[str, str]) -> TenantLimits:
    try:
        return tenant_limits_from_env(env)
    except TenantLimitsError as exc:
        raise GatewayConfigError(str(exc)) from None
