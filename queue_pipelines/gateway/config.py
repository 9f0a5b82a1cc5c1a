"""The gateway's settings, from the configuration (queue_pipelines/settings.py), checked for
what the gateway needs. A missing key is an error, never a default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from queue_pipelines.gateway.tenant_limits import (
    TenantLimits,
    TenantLimitsError,
    tenant_limits_from_env,
)
from queue_pipelines.settings import Settings, SettingsError, load


def _default(field_name: str):
    return Settings.model_fields[field_name].default


# The configuration's defaults (settings.py says what each limit is for).
DEFAULT_MAX_BODY_BYTES = _default("gateway_max_body_bytes")
DEFAULT_MAX_HEADER_BYTES = _default("gateway_max_header_bytes")
DEFAULT_BODY_TIMEOUT_SECONDS = _default("gateway_body_timeout_seconds")
DEFAULT_MAX_CONNECTIONS = _default("gateway_max_connections")
DEFAULT_HEADER_TIMEOUT_SECONDS = _default("gateway_header_timeout_seconds")
DEFAULT_KEEPALIVE_TIMEOUT_SECONDS = _default("gateway_keepalive_timeout_seconds")
ALGORITHMS = ("HS256", "RS256")
# RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
MIN_HS256_SECRET_BYTES = 32
# A bearer token for /metrics*: 16 random bytes (128 bits) at least.
MIN_METRICS_TOKEN_BYTES = 16
# The longest a bearer token may live (exp - iat, or exp - now without iat).
DEFAULT_MAX_TOKEN_LIFETIME_SECONDS = _default("gateway_jwt_max_lifetime_seconds")
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
    stripe_tolerance_seconds: int = _default("stripe_webhook_tolerance_seconds")
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


def _load(env: Mapping[str, str] | None) -> Settings:
    """The configuration from `env` (default: this process's environment); a value that cannot
    work stops the gateway, naming the variable."""
    try:
        return load(env)
    except SettingsError as exc:
        raise GatewayConfigError(str(exc)) from None


def _unscoped_tokens(config: Settings) -> str:
    value = config.gateway_jwt_unscoped_tokens.strip().lower()
    if value not in UNSCOPED_TOKENS:
        raise GatewayConfigError(
            f"GATEWAY_JWT_UNSCOPED_TOKENS={value!r}: use 'refuse' (the default: a token without "
            "a scope claim writes nothing) or 'allow'"
        )
    return value


def jwt_settings_from_env(env: Mapping[str, str] | None = None) -> JWTSettings:
    return jwt_settings(_load(env))


def jwt_settings(config: Settings) -> JWTSettings:
    algorithm = config.gateway_jwt_algorithm.strip().upper()
    if algorithm not in ALGORITHMS:
        raise GatewayConfigError(
            f"GATEWAY_JWT_ALGORITHM={algorithm!r} is not supported: use HS256 or RS256"
        )
    if algorithm == "HS256":
        secret = config.gateway_jwt_secret
        key = secret.get_secret_value() if secret else ""
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
        key = config.gateway_jwt_public_key or ""
        if not key and config.gateway_jwt_public_key_file:
            key = config.gateway_jwt_public_key_file.read_text()
        if "BEGIN PUBLIC KEY" not in key:
            raise GatewayConfigError(
                "GATEWAY_JWT_PUBLIC_KEY (or GATEWAY_JWT_PUBLIC_KEY_FILE) must hold the PEM "
                "public key that verifies RS256 bearer tokens; the gateway will not start "
                "without it"
            )
    return JWTSettings(
        algorithm=algorithm,
        key=key,
        audience=config.gateway_jwt_audience,
        issuer=config.gateway_jwt_issuer,
        allow_unscoped=_unscoped_tokens(config) == "allow",
        max_lifetime_seconds=config.gateway_jwt_max_lifetime_seconds,
    )


def unsafe_secrets(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each secret the gateway will not start with: {name: why}, never its value. Any
    secret holding a placeholder (CHANGE-ME) or an example value from deploy/, an HS256 key
    under 32 bytes, a metrics token under 16 bytes. In every mode: the gateway has no sandbox
    value of its own to fall back to, and a token signed with a published key is anyone's."""
    config = _load(env)
    secrets = config.secrets()
    why = dict.fromkeys(
        config.placeholder_secrets(), "a placeholder or an example value from deploy/"
    )
    hs256 = config.gateway_jwt_algorithm.strip().upper() == "HS256"
    secret = secrets.get("GATEWAY_JWT_SECRET", "")
    if hs256 and secret and len(secret.encode()) < MIN_HS256_SECRET_BYTES:
        why.setdefault("GATEWAY_JWT_SECRET", f"shorter than {MIN_HS256_SECRET_BYTES} bytes")
    token = secrets.get("GATEWAY_METRICS_TOKEN", "")
    if token and len(token.encode()) < MIN_METRICS_TOKEN_BYTES:
        why.setdefault("GATEWAY_METRICS_TOKEN", f"shorter than {MIN_METRICS_TOKEN_BYTES} bytes")
    return why


def refuse_unsafe_secrets(env: Mapping[str, str] | None = None) -> None:
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


def settings_from_env(
    env: Mapping[str, str] | None = None, key_prefix: str = "qp"
) -> GatewaySettings:
    """The gateway's settings from `env` (default: this process's environment); QUEUE_KEY_PREFIX,
    when set, over `key_prefix`."""
    refuse_unsafe_secrets(env)
    config = _load(env)
    secrets = config.secrets()
    configured_prefix = "queue_key_prefix" in config.model_fields_set
    return GatewaySettings(
        jwt=jwt_settings(config),
        stripe_webhook_secret=secrets.get("STRIPE_WEBHOOK_SECRET"),
        stripe_tolerance_seconds=config.stripe_webhook_tolerance_seconds,
        max_body_bytes=config.gateway_max_body_bytes,
        key_prefix=config.queue_key_prefix if configured_prefix else key_prefix,
        max_header_bytes=config.gateway_max_header_bytes,
        body_timeout_seconds=config.gateway_body_timeout_seconds,
        max_connections=config.gateway_max_connections,
        header_timeout_seconds=config.gateway_header_timeout_seconds,
        keepalive_timeout_seconds=config.gateway_keepalive_timeout_seconds,
        metrics_token=secrets.get("GATEWAY_METRICS_TOKEN"),
        metrics_port=config.gateway_metrics_port,
        tenant_limits=_tenant_limits(config),
    )


# The tenant limits' variables, as gateway/tenant_limits.py parses them.
TENANT_LIMIT_FIELDS = (
    "gateway_tenant_rate_limit",
    "gateway_tenant_rate_limits",
    "gateway_tenant_email_quota",
    "gateway_tenant_email_quotas",
    "gateway_tenant_priority_range",
    "gateway_tenant_priority_ranges",
)


def _tenant_limits(config: Settings) -> TenantLimits:
    given = {
        name.upper(): value
        for name in TENANT_LIMIT_FIELDS
        if (value := getattr(config, name)) is not None
    }
    try:
        return tenant_limits_from_env(given)
    except TenantLimitsError as exc:
        raise GatewayConfigError(str(exc)) from None
