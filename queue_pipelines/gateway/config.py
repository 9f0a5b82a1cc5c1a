"""The gateway's settings, from the environment. A missing key is an error, never a default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BODY_BYTES = 64 * 1024
ALGORITHMS = ("HS256", "RS256")
# RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
MIN_HS256_SECRET_BYTES = 32


class GatewayConfigError(Exception):
    """Start-up refused: the message names the variable to set."""


@dataclass(frozen=True)
class JWTSettings:
    algorithm: str  # exactly one, pinned
    key: str  # HS256: the shared secret; RS256: the PEM public key
    audience: str | None = None
    issuer: str | None = None
    require_scope: bool = False
    leeway_seconds: int = 30


@dataclass(frozen=True)
class GatewaySettings:
    jwt: JWTSettings
    stripe_webhook_secret: str | None
    stripe_tolerance_seconds: int = 300
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    key_prefix: str = "qp"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


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
        require_scope=_flag(env.get("GATEWAY_JWT_REQUIRE_SCOPE")),
    )


def settings_from_env(env: dict[str, str] | None = None, key_prefix: str = "qp") -> GatewaySettings:
    env = dict(os.environ if env is None else env)
    return GatewaySettings(
        jwt=jwt_settings_from_env(env),
        stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET") or None,
        stripe_tolerance_seconds=int(env.get("STRIPE_WEBHOOK_TOLERANCE_SECONDS", "300")),
        max_body_bytes=int(env.get("GATEWAY_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES))),
        key_prefix=env.get("QUEUE_KEY_PREFIX") or key_prefix,
    )
