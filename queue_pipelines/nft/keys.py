"""Keypairs: parsing the payer's secret and deriving each ticket's mint address."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from queue_pipelines.failures import PermanentError


def parse_keypair(secret: str) -> Keypair:
    """A keypair as base58 (Phantom's export) or the JSON byte array `solana-keygen` writes.

    The message never repeats the secret."""
    text = secret.strip()
    try:
        if text.startswith("["):
            return Keypair.from_bytes(bytes(json.loads(text)))
        return Keypair.from_base58_string(text)
    except Exception:
        raise PermanentError(
            "the payer keypair is neither base58 nor a solana-keygen JSON byte array "
            "(64 bytes): check SOLANA_PAYER_KEYPAIR",
            code="invalid_keypair",
        ) from None


def keygen_json(keypair: Keypair) -> str:
    return json.dumps(list(bytes(keypair)))


def load_or_create_keypair(path: Path) -> Keypair:
    """The dev keypair of the embedded ledger: made once, then kept (solana-keygen format)."""
    if path.exists():
        return parse_keypair(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    keypair = Keypair()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(keygen_json(keypair))
    tmp.chmod(0o600)
    tmp.replace(path)
    return keypair


def parse_address(value: str, what: str = "wallet address") -> Pubkey:
    try:
        return Pubkey.from_string(value)
    except Exception:
        raise PermanentError(f"invalid {what} {value!r}: not a base58 Solana address") from None


def derived_mint_keypair(payer: Keypair, effect_key: str) -> Keypair:
    """The mint account for one request, the same on every attempt.

    A second attempt that reaches the chain finds the account taken and cannot create a
    second NFT, whatever the effect ledger says. Keyed with the payer's secret so nobody else
    can predict or squat the address."""
    seed = hmac.new(bytes(payer)[:32], f"qp-ticket-mint:{effect_key}".encode(), hashlib.sha256)
    return Keypair.from_seed(seed.digest())
