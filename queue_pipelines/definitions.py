"""The code location: jobs, sensors and resources, with resources chosen by environment.

Every backend falls back to its embedded or sandbox form when its variable is unset
(README, "Switching to the real thing"); secrets are only ever read through dg.EnvVar.
"""

from __future__ import annotations

import logging
import os

import dagster as dg

from queue_pipelines import settings, tags
from queue_pipelines.jobs.mint import mint_job, mint_run_config
from queue_pipelines.jobs.nft_transfer import nft_transfer_job
from queue_pipelines.jobs.payment import payment_job, payment_run_config
from queue_pipelines.jobs.refund import refund_job, refund_run_config
from queue_pipelines.jobs.wallet_balance import build_wallet_balance_schedule, wallet_balance_job
from resources import (
    EffectLedgerResource,
    MetadataStoreResource,
    RedisResource,
    SolanaResource,
    StripeResource,
)
from sensors.intake import build_intake_sensor
from sensors.run_status import build_run_status_sensors

log = logging.getLogger("queue_pipelines")


def redis_resource() -> RedisResource:
    if os.environ.get("REDIS_URL"):
        return RedisResource(url=dg.EnvVar("REDIS_URL"))
    return RedisResource(url=settings.EMBEDDED_REDIS_URL)


def stripe_resource() -> StripeResource:
    webhook_secret = (
        dg.EnvVar("STRIPE_WEBHOOK_SECRET") if os.environ.get("STRIPE_WEBHOOK_SECRET") else None
    )
    if not settings.stripe_is_sandbox():
        return StripeResource(
            secret_key=dg.EnvVar("STRIPE_SECRET_KEY"), webhook_secret=webhook_secret
        )
    api_base = os.environ.get("STRIPE_API_BASE") or settings.SANDBOX_STRIPE_URL
    log.warning("STRIPE_SECRET_KEY is unset: Stripe calls go to the sandbox at %s", api_base)
    return StripeResource(
        secret_key=settings.SANDBOX_STRIPE_KEY, api_base=api_base, webhook_secret=webhook_secret
    )


def effect_ledger_resource() -> EffectLedgerResource:
    if os.environ.get("DAGSTER_POSTGRES_URL"):
        return EffectLedgerResource(database_url=dg.EnvVar("DAGSTER_POSTGRES_URL"))
    return EffectLedgerResource(database_url=settings.ledger_url())


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
        rpc_url=settings.EMBEDDED_SOLANA_URL,
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
            ("solana", settings.solana_is_embedded()),
        )
        if is_sandbox
    ]
    return {tags.SANDBOX: ",".join(sandboxed)} if sandboxed else {}


INTAKE_JOBS = [payment_job, refund_job, mint_job]


def build_definitions() -> dg.Definitions:
    extra_tags = sandbox_tags()
    return dg.Definitions(
        jobs=[*INTAKE_JOBS, nft_transfer_job, wallet_balance_job],
        schedules=[build_wallet_balance_schedule(settings.payer_balance_threshold_sol())],
        sensors=[
            build_intake_sensor("payment", payment_job, payment_run_config, extra_tags=extra_tags),
            build_intake_sensor("refund", refund_job, refund_run_config, extra_tags=extra_tags),
            build_intake_sensor("mint", mint_job, mint_run_config, extra_tags=extra_tags),
            *build_run_status_sensors(INTAKE_JOBS),
        ],
        resources={
            "redis": redis_resource(),
            "stripe": stripe_resource(),
            "effect_ledger": effect_ledger_resource(),
            "solana": solana_resource(),
            "metadata_store": metadata_store_resource(),
        },
    )


defs = build_definitions()
