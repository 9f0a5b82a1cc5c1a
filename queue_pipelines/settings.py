"""Settings read from the environment, each falling back to its embedded default."""

from __future__ import annotations

import os
from pathlib import Path

from queue_pipelines.sandbox.defaults import EMBEDDED_REDIS_URL, EMBEDDED_SOLANA_URL


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home")


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or EMBEDDED_REDIS_URL


def stripe_is_sandbox() -> bool:
    return not os.environ.get("STRIPE_SECRET_KEY")


def embedded_ledger_url() -> str:
    return f"sqlite:///{dagster_home() / 'effect_ledger.db'}"


def effect_ledger_url() -> str:
    """The effect ledger the run workers use: PostgreSQL at DAGSTER_POSTGRES_URL, else the
    embedded SQLite file (as deployment.effect_ledger_resource chooses)."""
    return os.environ.get("DAGSTER_POSTGRES_URL") or embedded_ledger_url()


def gateway_secret_file() -> Path:
    """Where `make run` keeps the HS256 secret it generates for the gateway, when
    GATEWAY_JWT_SECRET is unset."""
    return dagster_home() / "gateway-jwt-secret"


def smtp_is_sandbox() -> bool:
    return not os.environ.get("SMTP_HOST")


def outbox_dir() -> Path:
    return dagster_home() / "outbox"


def solana_is_embedded() -> bool:
    return not os.environ.get("SOLANA_RPC_URL")


def solana_state_dir() -> Path:
    """The embedded ledger's accounts and its dev payer keypair."""
    return dagster_home() / "solana"


def nft_metadata_dir() -> Path:
    return dagster_home() / "nft-metadata"


def nft_metadata_base_url() -> str:
    return os.environ.get("NFT_METADATA_BASE_URL") or f"{EMBEDDED_SOLANA_URL}/metadata"


def payer_balance_threshold_sol() -> float:
    return float(os.environ.get("SOLANA_MIN_BALANCE_SOL") or 1.0)
