"""The cluster backend (solana-py's client) against a JSON-RPC endpoint served over LiteSVM."""

from __future__ import annotations

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer

from queue_pipelines.failures import PermanentError, TransientError
from queue_pipelines.nft import token2022
from queue_pipelines.nft.holders import holds
from tests.support.solana_fixtures import mint_ticket as mint
from tests.support.solana_fixtures import ticket_payload, token_2022_mints


def test_mint_over_json_rpc_is_executed_by_the_token_programs(
    rpc_ledger, rpc_solana, metadata_store, ledger, tenant
):
    buyer = Keypair().pubkey()

    outcome = mint(rpc_solana, metadata_store, ledger, tenant, "rpc", ticket_payload(buyer))

    state = token2022.decode_mint(rpc_solana.chain().account(Pubkey.from_string(outcome.mint)).data)
    assert (state.supply, state.decimals, state.mint_authority) == (1, 0, None)
    assert (state.metadata.name, state.metadata.uri) == ("Aurora Live #1", outcome.uri)
    assert holds(rpc_solana.chain(), Pubkey.from_string(outcome.mint), buyer)
    calls = rpc_ledger.rpc.calls
    for method in (
        "getLatestBlockhash",
        "sendTransaction",
        "getSignatureStatuses",
        "getAccountInfo",
        "getBalance",
        "getMinimumBalanceForRentExemption",
        "getProgramAccounts",
    ):
        assert calls.get(method, 0) >= 1, f"{method} not called: {calls}"


def test_an_expired_blockhash_is_transient_and_the_retry_mints_once(
    rpc_ledger, rpc_solana, metadata_store, ledger, tenant
):
    payload = ticket_payload(Keypair().pubkey())
    rpc_ledger.rpc.expire_blockhashes = 1

    with pytest.raises(TransientError, match="blockhash expired") as failure:
        mint(rpc_solana, metadata_store, ledger, tenant, "bh", payload)
    assert failure.value.code == "blockhash_expired"
    assert token_2022_mints(rpc_ledger.rpc.ledger) == []
    assert ledger.get(f"mint:{tenant}:bh")["status"] == "pending"

    retried = mint(rpc_solana, metadata_store, ledger, tenant, "bh", payload)

    assert [str(a) for a, _ in token_2022_mints(rpc_ledger.rpc.ledger)] == [retried.mint]
    assert ledger.get(f"mint:{tenant}:bh")["status"] == "done"


def test_a_transaction_from_an_unfunded_payer_fails_permanently(rpc_solana):
    broke = Keypair()
    send = transfer(
        TransferParams(from_pubkey=broke.pubkey(), to_pubkey=Keypair().pubkey(), lamports=1)
    )

    with pytest.raises(PermanentError, match=f"payer wallet {broke.pubkey()} has too little SOL"):
        rpc_solana.chain().send([send], [broke])


def test_an_unreachable_endpoint_is_transient(payer_file):
    from queue_pipelines.sandbox.servers import free_port
    from resources import SolanaResource

    solana = SolanaResource(
        rpc_url=f"http://127.0.0.1:{free_port()}", payer_keypair_path=payer_file, timeout_seconds=2
    )
    with pytest.raises(TransientError, match="Solana RPC at"):
        solana.chain().balance(solana.payer().pubkey())
