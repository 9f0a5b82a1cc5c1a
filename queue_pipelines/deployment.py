"""What this deployment runs on, chosen by the settings (queue_pipelines/settings.py): the
resources (each the real thing when its variable is set, else its embedded or sandbox form;
README, "Switching to the real thing") and how each job type's requests are batched.

Secrets are handed to resources only as dg.EnvVar, so they never appear in run config or the UI:
the settings say whether one is set, the resource reads its value.
"""

from __future__ import annotations

import logging

import dagster as dg

from queue_pipelines import tags
from queue_pipelines.intake.batches import BatchPolicy
from queue_pipelines.intake.registry import WEBHOOK_KINDS, JobTypeSpec
from queue_pipelines.providers.guard import OFF
from queue_pipelines.settings import (
    EMBEDDED_REDIS_URL,
    EMBEDDED_SOLANA_URL,
    SANDBOX_STRIPE_KEY,
    SANDBOX_STRIPE_URL,
    SANDBOX_WEBHOOK_SECRET,
    SMTP_SINK_PORT,
    load,
)
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
    config = load()
    prefix = config.queue_key_prefix
    if config.redis_url:
        return RedisResource(url=dg.EnvVar("REDIS_URL"), key_prefix=prefix)
    return RedisResource(url=EMBEDDED_REDIS_URL, key_prefix=prefix)


# ProviderLimits' fields, each set by the setting <provider>_<field> (STRIPE_RATE_LIMIT ...).
LIMIT_FIELDS = ("rate_limit", "breaker_fail_max", "breaker_reset_seconds")


def provider_limits(provider: str, redis: RedisResource) -> dict:
    """The provider's rate limit ("25/second", "off"; unset: the resource's default) and
    circuit breaker (consecutive transient failures that open it, 0: none; seconds it stays
    open), from its settings; all shared by every run worker through Redis."""
    config = load()
    configured = {
        field: value
        for field in LIMIT_FIELDS
        if (value := getattr(config, f"{provider}_{field}")) is not None
    }
    return {"redis": redis, **configured}


def stripe_limits(redis: RedisResource) -> dict:
    """provider_limits for Stripe; unset, the rate is Stripe's documented limit for the key's
    mode (live 100/second, test 25/second), or off in sandbox mode."""
    limits = provider_limits("stripe", redis)
    if "rate_limit" not in limits and load().stripe_is_sandbox:
        # localstripe has no limit to respect, and the throughput benchmark (bench/e2e.py)
        # drives ~50 payments/s through it: test mode's 25/s would cap what it measures.
        limits["rate_limit"] = OFF
    return limits


def stripe_resource(redis: RedisResource) -> StripeResource:
    limits = stripe_limits(redis)
    config = load()
    if not config.stripe_is_sandbox:
        return StripeResource(secret_key=dg.EnvVar("STRIPE_SECRET_KEY"), **limits)
    api_base = config.stripe_api_base or SANDBOX_STRIPE_URL
    log.warning("STRIPE_SECRET_KEY is unset: Stripe calls go to the sandbox at %s", api_base)
    return StripeResource(
        secret_key=SANDBOX_STRIPE_KEY,
        api_base=api_base,
        **limits,
    )


def effect_ledger_resource() -> EffectLedgerResource:
    config = load()
    if config.dagster_postgres_url:
        return EffectLedgerResource(database_url=dg.EnvVar("DAGSTER_POSTGRES_URL"))
    return EffectLedgerResource(database_url=config.embedded_ledger_url)


def _env_or_none(name: str) -> dg.EnvVar | None:
    """The secret as the resource reads it, when the setting is given."""
    return dg.EnvVar(name) if getattr(load(), name.lower()) is not None else None


def smtp_resource(redis: RedisResource) -> SmtpResource:
    limits = provider_limits("smtp", redis)
    config = load()
    if config.smtp_is_sandbox:
        log.warning(
            "SMTP_HOST is unset: mail goes to the local sink on 127.0.0.1:%d (queue-pipelines "
            "outbox)",
            SMTP_SINK_PORT,
        )
        return SmtpResource(
            host="127.0.0.1",
            port=SMTP_SINK_PORT,
            security="none",
            sandbox=True,
            **limits,
        )
    optional = {
        name: value
        for name, value in (
            ("port", config.smtp_port),
            ("security", config.smtp_security),
            ("from_address", config.smtp_from),
            ("tls_ca_file", config.smtp_tls_ca_file),
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
    if load().webhook_secret:
        return WebhookResource(secret=dg.EnvVar("WEBHOOK_SECRET"), **urls)
    return WebhookResource(secret=SANDBOX_WEBHOOK_SECRET, sandbox=True, **urls)


def notification_settings_resource() -> NotificationSettingsResource:
    config = load()
    configured = {
        name: value
        for name, value in (
            ("tenants_file", config.qp_tenants_file),
            ("operator_email", config.operator_email),
            ("explorer_url_template", config.explorer_url_template),
        )
        if value is not None
    }
    return NotificationSettingsResource(**configured)


def solana_resource() -> SolanaResource:
    """SOLANA_RPC_URL: that cluster, paid by SOLANA_PAYER_KEYPAIR. Unset: the embedded ledger
    that `queue-pipelines dev` serves over JSON-RPC, paid by its dev keypair (docs/nft.md)."""
    config = load()
    if not config.solana_is_embedded:
        return SolanaResource(
            rpc_url=dg.EnvVar("SOLANA_RPC_URL"),
            payer_keypair=dg.EnvVar("SOLANA_PAYER_KEYPAIR"),
            custodial_keypairs=_env_or_none("SOLANA_CUSTODIAL_KEYPAIRS"),
            commitment=config.solana_commitment,
        )
    return SolanaResource(
        rpc_url=EMBEDDED_SOLANA_URL,
        payer_keypair_path=str(config.solana_state_dir / "dev-payer.json"),
    )


def metadata_store_resource() -> MetadataStoreResource:
    """ARWEAVE_URL: uploads there, paid by ARWEAVE_WALLET_JWK. Unset: files under
    DAGSTER_HOME, served by the embedded Solana endpoint (or NFT_METADATA_BASE_URL)."""
    config = load()
    if config.arweave_url:
        return MetadataStoreResource(
            backend="arweave",
            arweave_url=dg.EnvVar("ARWEAVE_URL"),
            arweave_wallet=dg.EnvVar("ARWEAVE_WALLET_JWK"),
        )
    return MetadataStoreResource(
        directory=str(config.nft_metadata_dir), base_url=config.metadata_base_url
    )


def sandbox_tags() -> dict[str, str]:
    """Runs say in the UI which parts of them are not the real thing."""
    config = load()
    sandboxed = [
        name
        for name, is_sandbox in (
            ("stripe", config.stripe_is_sandbox),
            ("redis", config.redis_is_embedded),
            ("smtp", config.smtp_is_sandbox),
            ("solana", config.solana_is_embedded),
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
    smaller batch waits for more) override the registry's defaults (docs/performance.md); the
    settings refuse a size under 1 or a negative wait."""
    config = load()
    return BatchPolicy(
        size=config.qp_batch_size.get(spec.name, spec.batch_size),
        max_wait_seconds=config.qp_batch_wait.get(spec.name, spec.max_wait_seconds),
        quiet_seconds=spec.quiet_seconds,
    )
