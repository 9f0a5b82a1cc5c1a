"""Keypairs without a cluster: the payer's secret in either of its written forms (and a
refusal that never repeats it), the dev keypair made once and kept private, addresses, and
each request's mint address: the same on every attempt, another per request and per payer."""

from __future__ import annotations

import pytest
from solders.keypair import Keypair

from queue_pipelines.failures import PermanentError
from queue_pipelines.nft.keys import (
    derived_mint_keypair,
    keygen_json,
    load_or_create_keypair,
    parse_address,
    parse_keypair,
)


def test_the_payer_reads_as_base58_or_as_solana_keygen_json():
    payer = Keypair()

    assert parse_keypair(f"  {payer}\n") == payer  # str(): base58, as Phantom exports it
    assert parse_keypair(keygen_json(payer)) == payer


@pytest.mark.parametrize("secret", ["not-a-key", "[1, 2, 3]", "[300]", ""])
def test_a_bad_payer_secret_is_permanent_and_not_repeated(secret):
    with pytest.raises(PermanentError) as caught:
        parse_keypair(secret)

    assert caught.value.code == "invalid_keypair" and caught.value.permanent
    assert "SOLANA_PAYER_KEYPAIR" in caught.value.reason
    assert not secret or secret not in caught.value.reason


def test_the_dev_keypair_is_made_once_owner_only_and_then_kept(tmp_path):
    path = tmp_path / "ledger" / "payer.json"

    made = load_or_create_keypair(path)
    assert load_or_create_keypair(path) == made
    assert path.stat().st_mode & 0o777 == 0o600
    assert not path.with_suffix(".tmp").exists()


def test_addresses_are_base58_solana_public_keys():
    wallet = Keypair().pubkey()

    assert parse_address(str(wallet)) == wallet
    with pytest.raises(PermanentError, match="invalid mint 'xyz'"):
        parse_address("xyz", "mint")


def test_a_requests_mint_is_the_same_on_every_attempt_and_its_own():
    payer, other_payer = Keypair(), Keypair()
    first = derived_mint_keypair(payer, "mint:acme:t-1")

    assert derived_mint_keypair(payer, "mint:acme:t-1") == first
    assert derived_mint_keypair(payer, "mint:acme:t-2") != first
    assert derived_mint_keypair(other_payer, "mint:acme:t-1") != first
