"""What this deployment runs on, chosen by environment variables: the resources (each the
real thing when its variable is set, else its embedded or sandbox form; README, "Switching to
the real thing") and how each job type's requests are batched.

Secrets are only ever read through dg.EnvVar, so they never appear in run config or the UI.
"""

from __future__ import annotations

import logging
import os

import dagster as dg

from queue_pipelines import settings, tags
from queue_pipelines.intake.batches import BatchPolicy
from queue_pipelines.intake.registry import WEBHOOK_KINDS, JobTypeSpec
from queue_pipelines.providers.guard import OFF
from queue_pipelines.sandbox import defaults
from resources import (
    EffectLedgerResource,
    MetadataStoreResource,
    NotificationSettingsResource,
    NotifierResource,
    RedisResource,
    SmtpResource,
    SolanaResource,
    StripeResource,
    WebhookResource,
)

log = logging.getLogger("queue_pipelines")


def redis_resource() -> RedisResource:
    # QUEUE_KEY_PREFIX, as the gateway reads it: several deployments (or a bench) on one Redis.
    prefix = os.environ.get("QUEUE_KEY_PREFIX") or "qp"
    if os.environ.get("REDIS_URL"):
        return RedisResource(url=dg.EnvVar("REDIS_URL"), key_prefix=prefix)
    return RedisResource(url=defaults.EMBEDDED_REDIS_URL, key_prefix=prefix)


# Each provider's rate limit and circuit breaker settings (ProviderLimits' fields).
LIMIT_VARIABLES = {
    "stripe": ("STRIPE_RATE_LIMIT", "STRIPE_BREAKER_FAIL_MAX", "STRIPE_BREAKER_RESET_SECONDS"),
    "smtp": ("SMTP_RATE_LIMIT", "SMTP_BREAKER_FAIL_MAX", "SMTP_BREAKER_RESET_SECONDS"),
}


def provider_limits(provider: str, redis: RedisResource) -> dict:
    """The provider's rate limit ("25/second", "off"; unset: the resource's default) and
    circuit breaker (consecutive transient failures that open it, 0: none; seconds it stays
    open), from LIMIT_VARIABLES; all shared by every run worker through Redis."""
    rate, fail_max, reset = LIMIT_VARIABLES[provider]
    configured = {
        field: kind(os.environ[variable])
        for field, variable, kind in (
            ("rate_limit", rate, str),
            ("breaker_fail_max", fail_max, int),
            ("breaker_reset_seconds", reset, float),
        )
        if os.environ.get(variable)
    }
    return {"redis": redis, **configured}


def stripe_limits(redis: RedisResource) -> dict:
    """provider_limits for Stripe; unset, the rate is Stripe's documented limit for the key's
    mode (live 100/second, test 25/second), or off in sandbox mode."""
    limits = provider_limits("stripe", redis)
    if "rate_limit" not in limits and settings.stripe_is_sandbox():
        # localstripe has no limit to respect, and the throughput benchmark (bench/e2e.py)
        # drives ~50 payments/s through it: test mode's 25/s would cap what it measures.
        limits["rate_limit"] = OFF
    return limits


def stripe_resource(redis: RedisResource) -> StripeResource:
    limits = stripe_limits(redis)
    if not settings.stripe_is_sandbox():
        return StripeResource(secret_key=dg.EnvVar("STRIPE_SECRET_KEY"), **limits)
    api_base = os.environ.get("STRIPE_API_BASE") or defaults.SANDBOX_STRIPE_URL
    log.warning("STRIPE_SECRET_KEY is unset: Stripe calls go to the sandbox at %s", api_base)
    return StripeResource(
        secret_key=defaults.SANDBOX_STRIPE_KEY,
        api_base=api_base,
        **limits,
    )


def effect_ledger_resource() -> EffectLedgerResource:
    if os.environ.get("DAGSTER_POSTGRES_URL"):
        return EffectLedgerResource(database_url=dg.EnvVar("DAGSTER_POSTGRES_URL"))
    return EffectLedgerResource(database_url=settings.embedded_ledger_url())


def _env_or_none(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name) else None


def smtp_resource(redis: RedisResource) -> SmtpResource:
    limits = provider_limits("smtp", redis)
    if settings.smtp_is_sandbox():
        log.warning(
            "SMTP_HOST is unset: mail goes to the local sink on 127.0.0.1:%d (queue-pipelines "
            "outbox)",
            defaults.SMTP_SINK_PORT,
        )
        return SmtpResource(
            host="127.0.0.1",
            port=defaults.SMTP_SINK_PORT,
            security="none",
            sandbox=True,
            **limits,
        )
    optional = {
        name: value
        for name, value in (
            ("port", int(os.environ["SMTP_PORT"]) if os.environ.get("SMTP_PORT") else None),
            ("security", os.environ.get("SMTP_SECURITY")),
            ("from_address", os.environ.get("SMTP_FROM")),
            ("tls_ca_file", os.environ.get("SMTP_TLS_CA_FILE")),
        )
        if value is not None
    }
    return SmtpResource(
        host=dg.EnvVar("SMTP_HOST"),
        username=_env_or_none("SMTP_USERNAME"),
        password=_env_or_none("SMTP_PASSWORD"),
        **optional,
        **limits,
    )


def webhook_resource() -> WebhookResource:
    # Endpoint URLs may carry a receiver's token, so they too come through EnvVar.
    urls = {f"{kind}_url": _env_or_none(f"WEBHOOK_URL_{kind.upper()}") for kind in WEBHOOK_KINDS}
    if os.environ.get("WEBHOOK_SECRET"):
        return WebhookResource(secret=dg.EnvVar("WEBHOOK_SECRET"), **urls)
    return WebhookResource(secret=defaults.SANDBOX_WEBHOOK_SECRET, sandbox=True, **urls)


def notification_settings_resource() -> NotificationSettingsResource:
    configured = {
        name: os.environ[variable]
        for name, variable in (
            ("tenants_file", "QP_TENANTS_FILE"),
            ("operator_email", "OPERATOR_EMAIL"),
            ("explorer_url_template", "EXPLORER_URL_TEMPLATE"),
        )
        if os.environ.get(variable)
    }
    return NotificationSettingsResource(**configured)


def solana_resource() -> SolanaResource:
    """SOLANA_RPC_URL: that cluster, paid by SOLANA_PAYER_KEYPAIR. Unset: the embedded ledger
    that `queue-pipelines dev` serves over JSON-RPC, paid by its dev keypair (docs/nft.md)."""
    if not settings.solana_is_embedded():
        custodial = (
            dg.EnvVar("SOLANA_CUSTODIAL_KEYPAIRS")
            if os.environ.get("SOLANA_CUSTODIAL_KEYPAIRS")
            else None
        )
        return SolanaResource(
            rpc_url=dg.EnvVar("SOLANA_RPC_URL"),
            payer_keypair=dg.EnvVar("SOLANA_PAYER_KEYPAIR"),
            custodial_keypairs=custodial,
            commitment=os.environ.get("SOLANA_COMMITMENT") or "confirmed",
        )
    return SolanaResource(
        rpc_url=defaults.EMBEDDED_SOLANA_URL,
        payer_keypair_path=str(settings.solana_state_dir() / "dev-payer.json"),
    )


def metadata_store_resource() -> MetadataStoreResource:
    """ARWEAVE_URL: uploads there, paid by ARWEAVE_WALLET_JWK. Unset: files under
    DAGSTER_HOME, served by the embedded Solana endpoint (or NFT_METADATA_BASE_URL)."""
    if os.environ.get("ARWEAVE_URL"):
        return MetadataStoreResource(
            backend="arweave",
            arweave_url=dg.EnvVar("ARWEAVE_URL"),
            arweave_wallet=dg.EnvVar("ARWEAVE_WALLET_JWK"),
        )
    return MetadataStoreResource(
        directory=str(settings.nft_metadata_dir()), base_url=settings.nft_metadata_base_url()
    )


def sandbox_tags() -> dict[str, str]:
    """Runs say in the UI which parts of them are not the real thing."""
    sandboxed = [
        name
        for name, is_sandbox in (
            ("stripe", settings.stripe_is_sandbox()),
            ("redis", not os.environ.get("REDIS_URL")),
            ("smtp", settings.smtp_is_sandbox()),
            ("solana", settings.solana_is_embedded()),
        )
        if is_sandbox
    ]
    return {tags.SANDBOX: ",".join(sandboxed)} if sandboxed else {}


def all_resources() -> dict[str, dg.ConfigurableResource]:
    redis = redis_resource()
    return {
        "redis": redis,
        "stripe": stripe_resource(redis),
        "effect_ledger": effect_ledger_resource(),
        "notifier": NotifierResource(
            smtp=smtp_resource(redis),
            webhooks=webhook_resource(),
            notification_settings=notification_settings_resource(),
        ),
        "solana": solana_resource(),
        "metadata_store": metadata_store_resource(),
    }


def batch_policy(spec: JobTypeSpec) -> BatchPolicy:
    """QP_BATCH_SIZE_<TYPE> (1: one run per request) and QP_BATCH_WAIT_<TYPE> (seconds a
    smaller batch waits for more) override the registry's defaults (docs/performance.md)."""
    name = spec.name.upper()
    size = int(os.environ.get(f"QP_BATCH_SIZE_{name}") or spec.batch_size)
    wait = float(os.environ.get(f"QP_BATCH_WAIT_{name}") or spec.max_wait_seconds)
    if size < 1 or wait < 0:
        raise ValueError(f"QP_BATCH_SIZE_{name} must be 1 or more, QP_BATCH_WAIT_{name} 0 or more")
    return BatchPolicy(size=size, max_wait_seconds=wait)
