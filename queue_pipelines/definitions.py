"""The code location: jobs, sensors and resources, with resources chosen by environment.

Every backend falls back to its embedded or sandbox form when its variable is unset
(README, "Switching to the real thing"); secrets are only ever read through dg.EnvVar.
"""

from __future__ import annotations

import logging
import os
import warnings

import dagster as dg

from queue_pipelines import settings, tags
from queue_pipelines.jobs.mint import mint_job, mint_run_config
from queue_pipelines.jobs.nft_transfer import nft_transfer_job
from queue_pipelines.jobs.notification import notification_job, notification_run_config
from queue_pipelines.jobs.payment import payment_job, payment_run_config
from queue_pipelines.jobs.refund import refund_job, refund_run_config
from queue_pipelines.jobs.stripe_event import stripe_event_job, stripe_event_run_config
from queue_pipelines.jobs.wallet_balance import build_wallet_balance_schedule, wallet_balance_job
from queue_pipelines.sandbox import defaults
from resources import (
    EffectLedgerResource,
    MetadataStoreResource,
    NotificationSettingsResource,
    RedisResource,
    SmtpResource,
    SolanaResource,
    StripeResource,
    WebhookResource,
)
from sensors.intake import build_intake_sensor
from sensors.notifications import build_payment_failed_notice_sensor
from sensors.run_status import build_run_status_sensors

log = logging.getLogger("queue_pipelines")

# Dagster's own run_status_sensor/run_failure_sensor decorators pass `owners` to
# SensorDefinition, which then warns that the parameter is beta at every code-server start:
# nothing this project sets or can change, so it is not shown.
warnings.filterwarnings(
    "ignore", message="Parameter `owners` of initializer", category=dg.BetaWarning
)

# Run-status sensors handle 5 finished runs a tick by default, slower than the intake can
# launch them; this code location is where Dagster evaluates them, so raise it here. (The
# intake's stale-entry scan settles whatever they still miss.)
os.environ.setdefault("DAGSTER_RUN_STATUS_SENSOR_PROCESS_LIMIT", "200")
os.environ.setdefault("DAGSTER_RUN_STATUS_SENSOR_FETCH_LIMIT", "400")


def redis_resource() -> RedisResource:
    # QP_REDIS_PREFIX: keys under another prefix than "qp" (tests run a whole stack per prefix).
    prefix = os.environ.get("QP_REDIS_PREFIX") or "qp"
    if os.environ.get("REDIS_URL"):
        return RedisResource(url=dg.EnvVar("REDIS_URL"), key_prefix=prefix)
    return RedisResource(url=defaults.EMBEDDED_REDIS_URL, key_prefix=prefix)


def stripe_resource() -> StripeResource:
    webhook_secret = (
        dg.EnvVar("STRIPE_WEBHOOK_SECRET") if os.environ.get("STRIPE_WEBHOOK_SECRET") else None
    )
    if not settings.stripe_is_sandbox():
        return StripeResource(
            secret_key=dg.EnvVar("STRIPE_SECRET_KEY"), webhook_secret=webhook_secret
        )
    api_base = os.environ.get("STRIPE_API_BASE") or defaults.SANDBOX_STRIPE_URL
    log.warning("STRIPE_SECRET_KEY is unset: Stripe calls go to the sandbox at %s", api_base)
    return StripeResource(
        secret_key=defaults.SANDBOX_STRIPE_KEY, api_base=api_base, webhook_secret=webhook_secret
    )


def effect_ledger_resource() -> EffectLedgerResource:
    if os.environ.get("DAGSTER_POSTGRES_URL"):
        return EffectLedgerResource(database_url=dg.EnvVar("DAGSTER_POSTGRES_URL"))
    return EffectLedgerResource(database_url=settings.embedded_ledger_url())


def _env_or_none(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name) else None


def smtp_resource() -> SmtpResource:
    if settings.smtp_is_sandbox():
        log.warning(
            "SMTP_HOST is unset: mail goes to the local sink on 127.0.0.1:%d (queue-pipelines "
            "outbox)",
            defaults.SMTP_SINK_PORT,
        )
        return SmtpResource(
            host="127.0.0.1", port=defaults.SMTP_SINK_PORT, security="none", sandbox=True
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
    )


def webhook_resource() -> WebhookResource:
    # Endpoint URLs may carry a receiver's token, so they too come through EnvVar.
    urls = {
        f"{kind}_url": _env_or_none(f"WEBHOOK_URL_{kind.upper()}")
        for kind in ("payment", "refund", "nft")
    }
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


INTAKE_JOBS = [payment_job, refund_job, mint_job, notification_job, stripe_event_job]


def build_definitions() -> dg.Definitions:
    extra_tags = sandbox_tags()
    return dg.Definitions(
        jobs=[*INTAKE_JOBS, nft_transfer_job, wallet_balance_job],
        schedules=[build_wallet_balance_schedule(settings.payer_balance_threshold_sol())],
        sensors=[
            build_intake_sensor("payment", payment_job, payment_run_config, extra_tags=extra_tags),
            build_intake_sensor("refund", refund_job, refund_run_config, extra_tags=extra_tags),
            build_intake_sensor("mint", mint_job, mint_run_config, extra_tags=extra_tags),
            build_intake_sensor(
                "notification", notification_job, notification_run_config, extra_tags=extra_tags
            ),
            build_intake_sensor(
                "stripe_event", stripe_event_job, stripe_event_run_config, extra_tags=extra_tags
            ),
            *build_run_status_sensors(INTAKE_JOBS),
            build_payment_failed_notice_sensor(payment_job),
        ],
        resources={
            "redis": redis_resource(),
            "stripe": stripe_resource(),
            "effect_ledger": effect_ledger_resource(),
            "smtp": smtp_resource(),
            "webhooks": webhook_resource(),
            "notification_settings": notification_settings_resource(),
            "solana": solana_resource(),
            "metadata_store": metadata_store_resource(),
        },
    )


defs = build_definitions()
