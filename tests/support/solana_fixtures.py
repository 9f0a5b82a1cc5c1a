"""Solana for tests: a fresh LiteSVM ledger per test, in process or behind a JSON-RPC endpoint."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from spl.token.constants import TOKEN_2022_PROGRAM_ID

from queue_pipelines.intake.payloads import MintPayload
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.nft import token2022
from queue_pipelines.nft.holders import holder_of
from queue_pipelines.nft.keys import keygen_json
from queue_pipelines.nft.minting import MintOutcome, mint_ticket_once
from queue_pipelines.sandbox.solana_ledger import EmbeddedLedger, shared_ledger
from queue_pipelines.sandbox.solana_rpc import LedgerRpcServer
from resources import MetadataStoreResource, SolanaResource
from tests.support.harness import IntakeHarness, outcome_rows


@pytest.fixture
def payer_file(tmp_path) -> str:
    path = tmp_path / "payer.json"
    path.write_text(keygen_json(Keypair()))
    return str(path)


@pytest.fixture
def embedded_solana(payer_file) -> SolanaResource:
    """LiteSVM in this process, a ledger of this test's own."""
    return SolanaResource(embedded_ledger=f"test-{uuid.uuid4().hex}", payer_keypair_path=payer_file)


@pytest.fixture
def rpc_ledger() -> Iterator[LedgerRpcServer]:
    """A JSON-RPC endpoint over a fresh LiteSVM ledger, on a free loopback port."""
    with LedgerRpcServer(EmbeddedLedger()) as server:
        yield server


@pytest.fixture
def rpc_solana(rpc_ledger, payer_file) -> SolanaResource:
    """The cluster backend (solana-py) pointed at `rpc_ledger`, its payer funded there."""
    resource = SolanaResource(rpc_url=rpc_ledger.url, payer_keypair_path=payer_file)
    rpc_ledger.rpc.ledger.fund(resource.payer().pubkey())
    return resource


@pytest.fixture
def metadata_store(tmp_path) -> MetadataStoreResource:
    return MetadataStoreResource(
        directory=str(tmp_path / "nft-metadata"), base_url="http://127.0.0.1:1/metadata"
    )


def ledger_of(resource: SolanaResource) -> EmbeddedLedger:
    return shared_ledger(resource.embedded_ledger)


def ticket_payload(wallet: Pubkey | str, n: int = 1, **overrides) -> MintPayload:
    fields = {
        "order_id": f"order-{n}",
        "wallet": str(wallet),
        "name": f"Aurora Live #{n}",
        "symbol": "AUR",
        "description": "General admission",
        "image": "https://tickets.example/aurora.png",
        "attributes": {
            "event": "Aurora Live",
            "venue": "Olympia Hall",
            "seat": f"B-{n}",
            "date": "2026-12-31",
        },
        **overrides,
    }
    return MintPayload(**fields)


def mint_ticket(
    solana: SolanaResource,
    store,
    ledger,
    tenant: str,
    key: str,
    payload: MintPayload,
    run_id: str = "run-1",
) -> MintOutcome:
    """`mint_ticket_once` as a run's op calls it, with the resource's chain and payer."""
    return mint_ticket_once(
        solana.chain(), solana.payer(), ledger, store.put, tenant_id=tenant,
        idempotency_key=key, payload=payload, run_id=run_id,
    )  # fmt: skip


def mint_envelope(tenant: str, key: str, wallet: Pubkey | str, n: int = 1, **overrides) -> Envelope:
    return Envelope(
        type="mint",
        tenant_id=tenant,
        idempotency_key=key,
        payload=ticket_payload(wallet, n, **overrides),
    )


def token_2022_mints(ledger: EmbeddedLedger) -> list[tuple[Pubkey, token2022.MintState]]:
    """Every Token-2022 mint account on the ledger, decoded."""
    found = []
    for address, account in ledger.svm.get_program_accounts(TOKEN_2022_PROGRAM_ID):
        data = bytes(account.data)
        if len(data) > 165 and data[165] == 1:  # account type 1: a mint
            found.append((address, token2022.decode_mint(data)))
    return found


def holder(solana: SolanaResource, mint: str) -> Pubkey | None:
    """Who holds the ticket of `mint`, read from the chain."""
    found = holder_of(solana.chain(), Pubkey.from_string(mint))
    return found.owner if found else None


def mint_to_payer(instance, nft_resources, intake, tenant: str) -> tuple[str, Pubkey]:
    """A ticket minted through the intake to the payer's own (custodial) wallet."""
    payer = nft_resources["solana"].payer().pubkey()
    intake.enqueue(mint_envelope(tenant, "primary-sale", payer))
    minting = IntakeHarness(instance, nft_resources, "mint")
    assert minting.drain() == 1
    [row] = outcome_rows(minting.results[0])
    assert (row["status"], row["owner"]) == ("succeeded", str(payer))
    return row["mint"], payer
