"""The arweave MetadataStore against arlocal, a local Arweave gateway from the npm registry
(pinned in tools/arlocal, installed there by `npm ci` and run with the machine's Node.js).
arlocal checks each transaction's signature, so these uploads are signed as for arweave.net."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from queue_pipelines.nft import token2022
from queue_pipelines.nft.arweave import ArweaveGateway, ArweaveWallet, generate_wallet_jwk
from queue_pipelines.nft.minting import mint_ticket_once
from queue_pipelines.sandbox.servers import free_port, stop, wait_for_port
from resources import MetadataStoreResource
from tests.support.requirements import node_with_packages
from tests.support.solana_fixtures import ticket_payload

TOOL = Path(__file__).resolve().parents[2] / "tools" / "arlocal"


@pytest.fixture(scope="session")
def arlocal_url(tmp_path_factory) -> Iterator[str]:
    node = node_with_packages(TOOL, "arlocal", "to run arlocal, the local Arweave gateway", 900)
    port = free_port()
    log = open(tmp_path_factory.mktemp("arlocal") / "log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [node, str(TOOL / "node_modules" / "arlocal" / "bin" / "index.js"), str(port)],
        cwd=tmp_path_factory.mktemp("arlocal-data"), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(port, process, "arlocal", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        log.close()


@pytest.fixture(scope="session")
def arweave_wallet(arlocal_url) -> str:
    jwk = generate_wallet_jwk()
    address = ArweaveWallet(jwk).address
    httpx.get(f"{arlocal_url}/mint/{address}/1000000000000", timeout=10).raise_for_status()
    return jwk


@pytest.fixture
def arweave_store(arlocal_url, arweave_wallet) -> MetadataStoreResource:
    return MetadataStoreResource(
        backend="arweave", arweave_url=arlocal_url, arweave_wallet=arweave_wallet
    )


def uploads_tagged(arlocal_url: str, wallet: str, name: str) -> int:
    gateway = ArweaveGateway(arlocal_url, ArweaveWallet(wallet))
    query = (
        "query($owner: String!, $name: String!) { transactions(owners: [$owner], tags: "
        '[{name: "QP-Document", values: [$name]}]) { edges { node { id } } } }'
    )
    body = {"query": query, "variables": {"owner": gateway.wallet.address, "name": name}}
    response = httpx.post(f"{arlocal_url}/graphql", json=body, timeout=10)
    return len(response.json()["data"]["transactions"]["edges"])


def test_document_is_uploaded_once_and_served_by_its_uri(
    arweave_store, arlocal_url, arweave_wallet
):
    document = {"name": "Aurora Live #1", "attributes": [{"trait_type": "seat", "value": "B-1"}]}

    uri = arweave_store.put("ticket-one.json", document)
    again = arweave_store.put("ticket-one.json", document)

    assert uri.startswith(f"{arlocal_url}/") and again == uri
    served = httpx.get(uri, timeout=10)
    assert served.status_code == 200 and served.json() == document
    assert uploads_tagged(arlocal_url, arweave_wallet, "ticket-one.json") == 1


def test_a_transaction_with_a_bad_signature_is_refused_by_the_gateway(arlocal_url, arweave_wallet):
    """arlocal verifies signatures: the upload path is checked, not merely accepted."""
    gateway = ArweaveGateway(arlocal_url, ArweaveWallet(arweave_wallet))
    honest_sign = gateway.wallet.sign
    gateway.wallet.sign = lambda message: honest_sign(message + b"tampered")

    with pytest.raises(Exception, match="refused POST /tx: 400"):
        gateway.upload("tampered.json", b"{}")


def test_a_mint_with_the_arweave_store_puts_the_arweave_uri_on_chain(
    arweave_store, embedded_solana, ledger, tenant
):
    outcome = mint_ticket_once(
        embedded_solana.chain(),
        embedded_solana.payer(),
        ledger,
        arweave_store.put,
        tenant_id=tenant,
        idempotency_key="arweave",
        payload=ticket_payload(Keypair().pubkey()),
        run_id="run-1",
    )

    state = token2022.decode_mint(
        embedded_solana.chain().account(Pubkey.from_string(outcome.mint)).data
    )
    assert state.metadata.uri == outcome.uri
    assert json.loads(httpx.get(outcome.uri, timeout=10).text)["name"] == "Aurora Live #1"
