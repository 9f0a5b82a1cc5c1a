"""Bubblegum (compressed NFTs), byte for byte against Metaplex's published client.

tools/bubblegum-vectors/vectors.json holds what @metaplex-foundation/mpl-bubblegum 5.1.0 builds
for a few argument sets (generate.js, run with Node.js); the encoders of
queue_pipelines/nft/bubblegum.py must build the same program ids, account metas in order and
data, the same addresses and the same hashes. The programs are not available here, so none of
these bytes is ever executed (docs/nft.md)."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError
from solders.account import Account
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from queue_pipelines.failures import PermanentError
from queue_pipelines.intake.payloads import TransferPayload
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.nft import bubblegum, compressed
from queue_pipelines.nft.metaplex import Creator
from queue_pipelines.nft.transfers import transfer_ticket_once
from tests.support.harness import IntakeHarness, outcome_rows
from tests.support.requirements import node_with_packages
from tests.support.solana_fixtures import mint_envelope, mint_ticket, ticket_payload

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bubblegum-vectors"
VECTORS = json.loads((TOOL / "vectors.json").read_text())
TREE = Pubkey.from_string(VECTORS["merkle_tree"])
PAYER = Pubkey.from_string(VECTORS["payer"])
OWNER = Pubkey.from_string(VECTORS["leaf_owner"])


def as_vector(instructions) -> list[dict]:
    """Instructions in the vectors' shape."""
    return [
        {
            "program_id": str(ix.program_id),
            "accounts": [[str(m.pubkey), m.is_signer, m.is_writable] for m in ix.accounts],
            "data": bytes(ix.data).hex(),
        }
        for ix in instructions
    ]


def metadata_of(case: dict) -> bubblegum.MetadataArgs:
    return bubblegum.MetadataArgs(
        name=case["name"],
        symbol=case["symbol"],
        uri=case["uri"],
        seller_fee_basis_points=case["seller_fee_basis_points"],
        creators=tuple(
            Creator(Pubkey.from_string(c["address"]), c["verified"], c["share"])
            for c in case["creators"]
        ),
        collection=Pubkey.from_string(case["collection"]) if case["collection"] else None,
    )


def delegate_of(case: dict) -> Pubkey | None:
    return Pubkey.from_string(case["leaf_delegate"]) if case["leaf_delegate"] else None


def test_tree_account_sizes_match_spl_account_compression():
    for shape in VECTORS["tree_sizes"]:
        size = bubblegum.merkle_tree_size(
            shape["max_depth"], shape["max_buffer_size"], shape["canopy_depth"]
        )
        assert size == shape["size"], shape


def test_tree_config_address_matches():
    assert str(bubblegum.tree_config_address(TREE)) == VECTORS["tree_config"]


@pytest.mark.parametrize("case", VECTORS["create_tree"], ids=lambda c: f"depth{c['max_depth']}")
def test_create_tree_matches_byte_for_byte(case):
    size = bubblegum.merkle_tree_size(
        case["max_depth"], case["max_buffer_size"], case["canopy_depth"]
    )
    built = bubblegum.create_tree_instructions(
        payer=PAYER,
        merkle_tree=TREE,
        tree_creator=PAYER,
        max_depth=case["max_depth"],
        max_buffer_size=case["max_buffer_size"],
        canopy_depth=case["canopy_depth"],
        lamports=(size + 128) * 6960,  # the rent generate.js stands in for the cluster's
        public=case["public"],
    )

    assert as_vector(built) == case["instructions"]


@pytest.mark.parametrize("case", VECTORS["mint_v1"], ids=lambda c: c["name"][:12])
def test_mint_v1_matches_byte_for_byte(case):
    metadata = metadata_of(case)
    built = bubblegum.mint_v1(
        merkle_tree=TREE,
        leaf_owner=OWNER,
        leaf_delegate=delegate_of(case),
        payer=PAYER,
        tree_creator_or_delegate=PAYER,
        metadata=metadata,
    )

    assert as_vector([built]) == case["instructions"]
    assert metadata.encode().hex() == case["metadata_args"]


@pytest.mark.parametrize("case", VECTORS["mint_v1"], ids=lambda c: c["name"][:12])
def test_leaf_hashes_and_asset_id_match(case):
    """What a transfer proves about the leaf: the hashes, the asset id and the leaf itself."""
    metadata = metadata_of(case)

    assert metadata.data_hash().hex() == case["data_hash"]
    assert metadata.creator_hash().hex() == case["creator_hash"]
    assert str(bubblegum.asset_id(TREE, case["leaf_index"])) == case["asset_id"]
    leaf = bubblegum.leaf_hash(
        TREE,
        case["leaf_index"],
        OWNER,
        delegate_of(case) or OWNER,
        metadata.data_hash(),
        metadata.creator_hash(),
    )
    assert leaf.hex() == case["leaf_hash"]


def test_keccak_is_keccak_not_sha3():
    """Bubblegum hashes with Keccak-256, whose padding differs from FIPS SHA3-256."""
    assert bubblegum.keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )


@pytest.mark.parametrize("case", VECTORS["transfer"], ids=lambda c: f"proof{len(c['proof'])}")
def test_transfer_matches_byte_for_byte(case):
    built = bubblegum.transfer(
        merkle_tree=TREE,
        leaf_owner=OWNER,
        leaf_delegate=Pubkey.from_string(case["delegate"]) if case["delegate"] else None,
        new_leaf_owner=Pubkey.from_string(VECTORS["new_leaf_owner"]),
        root=bytes([case["root"]]) * 32,
        data_hash=bytes([case["data_hash"]]) * 32,
        creator_hash=bytes([case["creator_hash"]]) * 32,
        nonce=case["nonce"],
        index=case["index"],
        proof=[Pubkey.from_string(p) for p in case["proof"]],
    )

    assert as_vector([built]) == case["instructions"]


def test_tree_config_account_decodes():
    account = VECTORS["tree_config_account"]

    config = bubblegum.decode_tree_config(bytes.fromhex(account["data"]))

    assert config == bubblegum.TreeConfig(
        tree_creator=Pubkey.from_string(account["tree_creator"]),
        tree_delegate=Pubkey.from_string(account["tree_delegate"]),
        total_mint_capacity=account["total_mint_capacity"],
        num_minted=account["num_minted"],
        is_public=account["is_public"],
    )
    with pytest.raises(ValueError, match="not a Bubblegum TreeConfig"):
        bubblegum.decode_tree_config(bytes(len(account["data"]) // 2))


def test_committed_vectors_are_what_the_published_client_builds():
    """The vectors above are not hand-edited: generate.js, run now against the pinned
    package, prints them again."""
    node = node_with_packages(
        TOOL, "@metaplex-foundation/mpl-bubblegum", "to run Metaplex's Bubblegum client"
    )

    printed = subprocess.run(
        [node, "generate.js"], cwd=TOOL, capture_output=True, text=True, check=True, timeout=60
    )

    assert json.loads(printed.stdout) == VECTORS


# `standard: compressed` through the service. Neither program is on LiteSVM, so every path ends
# in the same refusal as `standard: metaplex`; what the cluster path sends before it is checked
# against the vectors.

NEEDS_PROGRAMS = "standard 'compressed' needs the Metaplex Bubblegum program"


def compressed_mint(solana, store, ledger, tenant, key, wallet):
    payload = ticket_payload(wallet, standard="compressed", seller_fee_basis_points=500)
    return mint_ticket(solana, store, ledger, tenant, key, payload)


def sent_transactions(rpc_ledger) -> list[VersionedTransaction]:
    """Every transaction the endpoint is sent from now on, as it arrives (before LiteSVM)."""
    sent: list[VersionedTransaction] = []
    send = rpc_ledger.rpc.rpc_sendTransaction

    def recording(encoded, config=None):
        sent.append(VersionedTransaction.from_bytes(base64.b64decode(encoded)))
        return send(encoded, config)

    rpc_ledger.rpc.rpc_sendTransaction = recording
    return sent


def instructions_of(transaction: VersionedTransaction) -> list[dict]:
    """The transaction's instructions: program, accounts in order, data."""
    keys = transaction.message.account_keys
    return [
        {
            "program_id": str(keys[ix.program_id_index]),
            "accounts": [str(keys[i]) for i in bytes(ix.accounts)],
            "data": bytes(ix.data).hex(),
        }
        for ix in transaction.message.instructions
    ]


def test_a_compressed_mint_on_the_embedded_ledger_is_refused_and_creates_nothing(
    embedded_solana, metadata_store, ledger, tenant
):
    with pytest.raises(PermanentError, match=NEEDS_PROGRAMS) as refused:
        compressed_mint(embedded_solana, metadata_store, ledger, tenant, "cnft", Keypair().pubkey())

    assert refused.value.code == "program_missing"
    assert "mint with standard 'token-2022'" in refused.value.reason
    assert ledger.get(f"mint:{tenant}:cnft") is None  # a refusal: the claim is released
    tree = compressed.tree_keypair(embedded_solana.payer(), 0).pubkey()
    assert embedded_solana.chain().account(tree) is None  # the transaction is atomic


def test_over_json_rpc_the_tree_creation_sent_is_the_published_clients_and_is_refused(
    rpc_ledger, rpc_solana, metadata_store, ledger, tenant
):
    """The cluster path (solana-py to the endpoint over LiteSVM) sends the payer's ticket tree
    first: its createAccount and createTreeConfig are, byte for byte, what Metaplex's client
    builds for the same tree shape. LiteSVM has no Bubblegum, so the transaction fails there,
    the request is refused, and mintV1 is never sent (nothing here ever executes it)."""
    sent = sent_transactions(rpc_ledger)
    payer = rpc_solana.payer()

    with pytest.raises(PermanentError, match=NEEDS_PROGRAMS):
        compressed_mint(rpc_solana, metadata_store, ledger, tenant, "cnft", Keypair().pubkey())

    [transaction] = sent
    tree = compressed.tree_keypair(payer, 0).pubkey()
    assert transaction.message.account_keys[:2] == [payer.pubkey(), tree]  # the two signers
    [reference] = [c for c in VECTORS["create_tree"] if c["max_depth"] == compressed.TREE_MAX_DEPTH]
    assert (reference["max_buffer_size"], reference["canopy_depth"], reference["public"]) == (
        compressed.TREE_MAX_BUFFER_SIZE,
        compressed.TREE_CANOPY_DEPTH,
        None,
    )
    ours = {
        VECTORS["payer"]: str(payer.pubkey()),
        VECTORS["merkle_tree"]: str(tree),
        VECTORS["tree_config"]: str(bubblegum.tree_config_address(tree)),
    }
    expected = [
        {
            "program_id": ix["program_id"],
            "accounts": [ours.get(key, key) for key, _signer, _writable in ix["accounts"]],
            "data": ix["data"],  # the endpoint's rent is the rate generate.js stands in with
        }
        for ix in reference["instructions"]
    ]
    assert instructions_of(transaction) == expected
    assert rpc_solana.chain().account(tree) is None
    assert ledger.get(f"mint:{tenant}:cnft") is None


def test_with_a_tree_in_place_the_mint_v1_sent_is_the_published_clients_and_is_refused(
    rpc_ledger, rpc_solana, metadata_store, ledger, tenant
):
    """The payer's tree config put on the ledger as Bubblegum would have made it (the program
    that would make it is missing): the request goes on to mintV1, whose instruction, captured
    at the endpoint, is the vectors' first mintV1 case (same ticket fields, buyer and
    collection) for this payer and tree. LiteSVM then refuses it like the tree."""
    payer = rpc_solana.payer().pubkey()
    tree = compressed.tree_keypair(rpc_solana.payer(), 0).pubkey()
    config = (
        bubblegum.TREE_CONFIG_ACCOUNT
        + bytes(payer) * 2  # creator and delegate
        + struct.pack("<QQ", 1 << compressed.TREE_MAX_DEPTH, 0)  # capacity, minted so far
        + bytes([0, 1, 0])  # private, not decompressible, version 1
    )
    rpc_ledger.rpc.ledger.svm.set_account(
        bubblegum.tree_config_address(tree),
        Account(10**9, config, bubblegum.BUBBLEGUM_PROGRAM_ID, False, 0),
    )
    reference = VECTORS["mint_v1"][0]
    payload = ticket_payload(
        VECTORS["leaf_owner"], standard="compressed", uri=reference["uri"],
        seller_fee_basis_points=reference["seller_fee_basis_points"],
        collection=reference["collection"],
    )  # fmt: skip
    assert (payload.name, payload.symbol) == (reference["name"], reference["symbol"])
    sent = sent_transactions(rpc_ledger)

    with pytest.raises(PermanentError, match=NEEDS_PROGRAMS):
        mint_ticket(rpc_solana, metadata_store, ledger, tenant, "cnft", payload)

    [transaction] = sent
    ours = {
        VECTORS["payer"]: str(payer),
        VECTORS["merkle_tree"]: str(tree),
        VECTORS["tree_config"]: str(bubblegum.tree_config_address(tree)),
    }
    [ix] = reference["instructions"]
    creator = bytes(Pubkey.from_string(VECTORS["payer"])).hex()  # the payer, sole creator
    assert instructions_of(transaction) == [
        {
            "program_id": ix["program_id"],
            "accounts": [ours.get(key, key) for key, _signer, _writable in ix["accounts"]],
            "data": ix["data"].replace(creator, bytes(payer).hex()),
        }
    ]
    assert ledger.get(f"mint:{tenant}:cnft") is None


def test_a_compressed_mint_in_doubt_is_left_to_an_operator_and_never_sent_again(
    embedded_solana, metadata_store, ledger, tenant
):
    """A compressed ticket has no address of its own to look for: an attempt that claimed the
    request and never recorded it (its worker died) may have minted, so nothing is sent."""
    ledger.claim(f"mint:{tenant}:lost", "mint", "run-0")  # run-0 died with the claim pending

    with pytest.raises(PermanentError, match="may have minted a compressed ticket") as refused:
        compressed_mint(embedded_solana, metadata_store, ledger, tenant, "lost", Keypair().pubkey())

    assert refused.value.code == "needs_reconciliation"
    assert ledger.get(f"mint:{tenant}:lost")["status"] == "pending"  # still in doubt
    tree = compressed.tree_keypair(embedded_solana.payer(), 0).pubkey()
    assert embedded_solana.chain().account(tree) is None  # nothing was sent


def test_a_compressed_transfer_is_refused_for_want_of_the_programs_and_claims_nothing(
    embedded_solana, ledger, tenant
):
    payer = embedded_solana.payer()
    asset = bubblegum.asset_id(compressed.tree_keypair(payer, 0).pubkey(), 0)

    with pytest.raises(PermanentError, match=NEEDS_PROGRAMS) as refused:
        transfer_ticket_once(
            embedded_solana.chain(), payer, {payer.pubkey(): payer}, ledger,
            tenant_id=tenant, idempotency_key="resale", mint=str(asset),
            to_wallet=str(Keypair().pubkey()), expected_owner=None, run_id="run-1",
            locks=None, standard="compressed",
        )  # fmt: skip

    assert refused.value.code == "program_missing"
    assert ledger.get(f"transfer:{tenant}:resale") is None


def test_the_payloads_take_the_compressed_standard():
    wallet = str(Keypair().pubkey())

    assert ticket_payload(wallet, standard="compressed").standard == "compressed"
    transfer = TransferPayload(mint=wallet, to_wallet=wallet, standard="compressed")
    assert transfer.standard == "compressed"
    assert TransferPayload(mint=wallet, to_wallet=wallet).standard == "token-2022"
    with pytest.raises(ValidationError, match="standard"):
        TransferPayload(mint=wallet, to_wallet=wallet, standard="bubblegum")


@pytest.fixture
def nft_resources(resources, rpc_solana, metadata_store) -> dict:
    """The session's resources (Redis, ledger, SMTP sink, webhooks) plus Solana."""
    return {**resources, "solana": rpc_solana, "metadata_store": metadata_store}


def test_compressed_requests_through_the_intake_are_dead_lettered_with_the_reason(
    instance, nft_resources, intake, tenant
):
    payer = nft_resources["solana"].payer()
    intake.enqueue(mint_envelope(tenant, "cnft-mint", Keypair().pubkey(), standard="compressed"))
    asset = bubblegum.asset_id(compressed.tree_keypair(payer, 0).pubkey(), 0)
    intake.enqueue(
        Envelope(
            type="transfer",
            tenant_id=tenant,
            idempotency_key="cnft-resale",
            payload={"mint": str(asset), "to_wallet": str(Keypair().pubkey()), "standard": "compressed"},
        )
    )  # fmt: skip

    for job_type in ("mint", "transfer"):
        harness = IntakeHarness(instance, nft_resources, job_type)
        assert harness.drain() == 1
        [row] = outcome_rows(harness.results[0])
        assert (row["status"], row["attempts"]) == ("failed", 1), job_type  # permanent

    reasons = [letter["reason"] for letter in intake.dead_letters()]
    assert len(reasons) == 2 and all(NEEDS_PROGRAMS in reason for reason in reasons)
    assert any("mint with standard 'token-2022'" in reason for reason in reasons)
    assert any("transfer compressed tickets against a cluster" in reason for reason in reasons)
