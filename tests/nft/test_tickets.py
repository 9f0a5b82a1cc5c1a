"""Minting, ownership and transfers on the embedded ledger: the real SPL Token-2022 and
Associated Token Account programs, executed by LiteSVM."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from spl.token.constants import TOKEN_2022_PROGRAM_ID
from spl.token.instructions import get_associated_token_address

from queue_pipelines.failures import PermanentError
from queue_pipelines.ledger import effects
from queue_pipelines.nft import token2022
from queue_pipelines.nft.holders import holder_of, holds
from queue_pipelines.nft.keys import derived_mint_keypair, keygen_json
from queue_pipelines.nft.minting import mint_ticket_once
from queue_pipelines.nft.transfers import transfer_ticket_once
from queue_pipelines.sandbox.solana_rpc import LedgerRpcServer
from resources import MetadataStoreResource, SolanaResource
from tests.support.harness import outcome_rows
from tests.support.solana_fixtures import ledger_of, ticket_payload, token_2022_mints
from tests.support.solana_fixtures import mint_ticket as mint


def test_minted_ticket_is_a_one_of_one_token_2022_nft_in_the_buyers_ata(
    embedded_solana, metadata_store, ledger, tenant
):
    buyer = Keypair().pubkey()
    payload = ticket_payload(buyer, 7)

    outcome = mint(embedded_solana, metadata_store, ledger, tenant, "t1", payload)

    chain = embedded_solana.chain()
    mint_address = Pubkey.from_string(outcome.mint)
    account = chain.account(mint_address)
    assert account.owner == TOKEN_2022_PROGRAM_ID
    state = token2022.decode_mint(account.data)
    assert (state.supply, state.decimals, state.mint_authority) == (1, 0, None)
    assert state.metadata_pointer == (embedded_solana.payer().pubkey(), mint_address)
    assert state.metadata.name == payload.name
    assert state.metadata.symbol == payload.symbol
    assert state.metadata.uri == outcome.uri
    assert state.metadata.mint == mint_address
    assert state.metadata.additional == {
        "event": "Aurora Live",
        "venue": "Olympia Hall",
        "seat": "B-7",
        "date": "2026-12-31",
    }
    ata = get_associated_token_address(buyer, mint_address, TOKEN_2022_PROGRAM_ID)
    assert outcome.token_account == str(ata)
    token_account = token2022.decode_token_account(chain.account(ata).data)
    assert (token_account.owner, token_account.mint, token_account.amount) == (
        buyer,
        mint_address,
        1,
    )
    assert holder_of(chain, mint_address).owner == buyer
    assert holds(chain, mint_address, buyer)
    assert not holds(chain, mint_address, Keypair().pubkey())


def test_metadata_document_follows_the_metaplex_json_standard(
    embedded_solana, metadata_store, ledger, tenant
):
    outcome = mint(
        embedded_solana, metadata_store, ledger, tenant, "doc", ticket_payload(Keypair().pubkey())
    )

    name = outcome.uri.rsplit("/", 1)[-1]
    document = json.loads((Path(metadata_store.directory) / name).read_text())
    assert document["name"] == "Aurora Live #1"
    assert document["symbol"] == "AUR"
    assert document["image"] == "https://tickets.example/aurora.png"
    assert {"trait_type": "seat", "value": "B-1"} in document["attributes"]
    assert {a["trait_type"] for a in document["attributes"]} == {"event", "venue", "seat", "date"}


def test_the_same_request_twice_mints_once(embedded_solana, metadata_store, ledger, tenant):
    payload = ticket_payload(Keypair().pubkey())
    first = mint(embedded_solana, metadata_store, ledger, tenant, "twice", payload)
    second = mint(embedded_solana, metadata_store, ledger, tenant, "twice", payload, "run-2")

    assert second.replayed and second.mint == first.mint
    assert len(token_2022_mints(ledger_of(embedded_solana))) == 1


def test_an_unrecorded_mint_that_landed_is_adopted_not_repeated(
    embedded_solana, metadata_store, ledger, tenant
):
    """A worker killed after the transaction landed, before the ledger write: the next
    attempt finds the request's mint account and does not mint again."""
    payload = ticket_payload(Keypair().pubkey())
    first = mint(embedded_solana, metadata_store, ledger, tenant, "lost", payload)
    with ledger.engine.begin() as conn:  # the claim stays pending: the record was never written
        conn.execute(
            effects.update()
            .where(effects.c.effect_key == f"mint:{tenant}:lost")
            .values(status="pending", result=None)
        )

    again = mint(embedded_solana, metadata_store, ledger, tenant, "lost", payload, "run-2")

    assert again.mint == first.mint and again.signature is None and not again.replayed
    assert ledger.get(f"mint:{tenant}:lost")["status"] == "done"
    assert len(token_2022_mints(ledger_of(embedded_solana))) == 1


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"uri": "https://x.example/" + "a" * 190}, "over the standard's limit of 200"),
        (
            {"standard": "metaplex", "seller_fee_basis_points": 500},
            "needs the Metaplex Token Metadata program",
        ),
    ],
)
def test_mints_the_service_refuses_fail_permanently_and_release_the_claim(
    embedded_solana, metadata_store, ledger, tenant, overrides, reason
):
    payload = ticket_payload(Keypair().pubkey()).model_copy(update=overrides)

    with pytest.raises(PermanentError, match=reason):
        mint(embedded_solana, metadata_store, ledger, tenant, "bad", payload)

    assert ledger.get(f"mint:{tenant}:bad") is None
    assert token_2022_mints(ledger_of(embedded_solana)) == []
    mint_address = derived_mint_keypair(embedded_solana.payer(), f"mint:{tenant}:bad").pubkey()
    assert embedded_solana.chain().account(mint_address) is None  # the transaction is atomic


def test_a_payer_without_funds_fails_permanently_saying_so(
    tmp_path, metadata_store, ledger, tenant
):
    """A payer from SOLANA_PAYER_KEYPAIR is never funded by the service: here it holds 0."""
    broke = Keypair()
    solana = SolanaResource(embedded_ledger=f"broke-{tenant}", payer_keypair=keygen_json(broke))
    solana.payer()

    with pytest.raises(
        PermanentError, match=rf"payer wallet {broke.pubkey()} holds 0\.000000000 SOL, less than"
    ):
        mint_ticket_once(
            solana.chain(),
            broke,
            ledger,
            metadata_store.put,
            tenant_id=tenant,
            idempotency_key="poor",
            payload=ticket_payload(Keypair().pubkey()),
            run_id="run-1",
        )
    assert ledger.get(f"mint:{tenant}:poor") is None


def test_transfer_from_a_custodial_wallet_moves_the_ticket(
    embedded_solana, metadata_store, ledger, tenant
):
    custody = Keypair()
    solana = SolanaResource(
        embedded_ledger=embedded_solana.embedded_ledger,
        payer_keypair_path=embedded_solana.payer_keypair_path,
        custodial_keypairs=json.dumps([keygen_json(custody)]),
    )
    minted = mint(solana, metadata_store, ledger, tenant, "m", ticket_payload(custody.pubkey()))
    new_owner = Keypair().pubkey()
    mint_address = Pubkey.from_string(minted.mint)

    moved = transfer_ticket_once(
        solana.chain(),
        solana.payer(),
        solana.custodial(),
        ledger,
        tenant_id=tenant,
        idempotency_key="resale-1",
        mint=minted.mint,
        to_wallet=str(new_owner),
        expected_owner=str(custody.pubkey()),
        run_id="run-t",
        locks=None,
    )

    chain = solana.chain()
    assert holds(chain, mint_address, new_owner)
    assert not holds(chain, mint_address, custody.pubkey())
    ata = get_associated_token_address(new_owner, mint_address, TOKEN_2022_PROGRAM_ID)
    assert moved.to_token_account == str(ata)
    assert token2022.decode_token_account(chain.account(ata).data).amount == 1
    replay = transfer_ticket_once(
        solana.chain(),
        solana.payer(),
        solana.custodial(),
        ledger,
        tenant_id=tenant,
        idempotency_key="resale-1",
        mint=minted.mint,
        to_wallet=str(new_owner),
        expected_owner=str(custody.pubkey()),
        run_id="run-t2",
        locks=None,
    )
    assert replay.replayed and replay.signature == moved.signature


def test_transfer_the_service_cannot_sign_is_refused(
    embedded_solana, metadata_store, ledger, tenant
):
    self_custodied = Keypair().pubkey()
    minted = mint(
        embedded_solana, metadata_store, ledger, tenant, "m", ticket_payload(self_custodied)
    )

    with pytest.raises(PermanentError, match="needs the signature of its holder"):
        transfer_ticket_once(
            embedded_solana.chain(),
            embedded_solana.payer(),
            embedded_solana.custodial(),
            ledger,
            tenant_id=tenant,
            idempotency_key="steal",
            mint=minted.mint,
            to_wallet=str(Keypair().pubkey()),
            expected_owner=None,
            run_id="run-t",
            locks=None,
        )
    assert holds(embedded_solana.chain(), Pubkey.from_string(minted.mint), self_custodied)


def test_local_metadata_is_served_over_http(tmp_path, embedded_solana, ledger, tenant):
    directory = tmp_path / "served"
    directory.mkdir()
    with LedgerRpcServer(ledger_of(embedded_solana), metadata_dir=directory) as server:
        store = MetadataStoreResource(directory=str(directory), base_url=f"{server.url}/metadata")
        outcome = mint(
            embedded_solana, store, ledger, tenant, "http", ticket_payload(Keypair().pubkey())
        )
        with urllib.request.urlopen(outcome.uri, timeout=5) as response:
            document = json.load(response)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{server.url}/metadata/../payer.json", timeout=5)

    assert document["name"] == "Aurora Live #1"


def test_the_dev_ledger_keeps_its_payer_and_tickets_across_restarts(tmp_path, ledger, tenant):
    """What `make run` starts: the embedded ledger as a JSON-RPC process, state on disk."""
    from queue_pipelines.sandbox.servers import free_port, stop
    from queue_pipelines.sandbox.solana_rpc import start_embedded_solana

    state, documents, port = tmp_path / "solana", tmp_path / "nft-metadata", free_port()
    solana = SolanaResource(
        rpc_url=f"http://127.0.0.1:{port}", payer_keypair_path=str(state / "dev-payer.json")
    )
    store = MetadataStoreResource(directory=str(documents), base_url=f"{solana.rpc_url}/metadata")
    buyer = Keypair().pubkey()

    process = start_embedded_solana(port, state, documents)
    try:
        payer = solana.payer().pubkey()
        minted = mint(solana, store, ledger, tenant, "dev", ticket_payload(buyer))
    finally:
        stop(process)
    process = start_embedded_solana(port, state, documents)
    try:
        restarted = SolanaResource(
            rpc_url=solana.rpc_url, payer_keypair_path=solana.payer_keypair_path
        )
        assert restarted.payer().pubkey() == payer
        assert holds(restarted.chain(), Pubkey.from_string(minted.mint), buyer)
        with urllib.request.urlopen(minted.uri, timeout=5) as response:
            assert json.load(response)["name"] == "Aurora Live #1"
    finally:
        stop(process)


def test_nft_transfer_job_by_hand_moves_a_custodial_ticket_and_refuses_a_self_custodied_one(
    instance, embedded_solana, metadata_store, ledger_resource, ledger, tenant, redis_resource
):
    """An operator's launch with a batch in the run config (docs/nft.md), no intake entry."""
    from queue_pipelines.jobs.nft_transfer import nft_transfer_job

    custody = Keypair()
    solana = SolanaResource(
        embedded_ledger=embedded_solana.embedded_ledger,
        payer_keypair_path=embedded_solana.payer_keypair_path,
        custodial_keypairs=json.dumps([keygen_json(custody)]),
    )
    held = mint(solana, metadata_store, ledger, tenant, "a", ticket_payload(custody.pubkey()))
    self_custodied = Keypair().pubkey()
    elsewhere = mint(solana, metadata_store, ledger, tenant, "b", ticket_payload(self_custodied))
    buyer = Keypair().pubkey()
    requests = [
        {"idempotency_key": key, "payload": {"mint": minted.mint, "to_wallet": str(buyer)}}
        for key, minted in (("resale-a", held), ("resale-b", elsewhere))
    ]

    result = nft_transfer_job.execute_in_process(
        run_config={
            "ops": {"transfer_tickets": {"config": {"tenant_id": tenant, "requests": requests}}}
        },
        resources={"solana": solana, "effect_ledger": ledger_resource, "redis": redis_resource},
        instance=instance,
        raise_on_error=False,
    )

    # A request that failed for good is dead-lettered, and its run marked failed; the other
    # request's transfer stands.
    assert not result.success
    assert result.dagster_run.tags["queue/job_type"] == "transfer"
    assert holds(solana.chain(), Pubkey.from_string(held.mint), buyer)
    assert holds(solana.chain(), Pubkey.from_string(elsewhere.mint), self_custodied)
    rows = {row["request"]: row for row in outcome_rows(result)}
    assert rows["resale-a"]["status"] == "succeeded"
    assert rows["resale-b"]["status"] == "failed"
    assert "needs the signature of its holder" in rows["resale-b"]["reason"]
