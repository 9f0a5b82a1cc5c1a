"""Embedded defaults: what runs when no environment variable points at the real thing."""

from __future__ import annotations

import os
from pathlib import Path

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
GATEWAY_PORT = 3011
EMBEDDED_SOLANA_URL = f"http://127.0.0.1:{EMBEDDED_SOLANA_PORT}"


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home")


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or EMBEDDED_REDIS_URL


def stripe_is_sandbox() -> bool:
    return not os.environ.get("STRIPE_SECRET_KEY")


def embedded_ledger_url() -> str:
    return f"sqlite:///{dagster_home() / 'effect_ledger.db'}"


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
