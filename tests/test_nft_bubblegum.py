"""Bubblegum (compressed NFTs), byte for byte against Metaplex's published client.

tools/bubblegum-vectors/vectors.json holds what @metaplex-foundation/mpl-bubblegum 5.1.0 builds
for a few argument sets (generate.js, run with Node.js); the encoders of
queue_pipelines/nft/bubblegum.py must build the same program ids, account metas in order and
data, the same addresses and the same hashes. The programs are not available here, so none of
these bytes is ever executed (docs/nft.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from solders.pubkey import Pubkey

from queue_pipelines.nft import bubblegum
from queue_pipelines.nft.metaplex import Creator
from tests.support.requirements import node_and_npm

TOOL = Path(__file__).resolve().parent.parent / "tools" / "bubblegum-vectors"
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
    node, npm = node_and_npm("to run Metaplex's Bubblegum client")
    if not (TOOL / "node_modules" / "@metaplex-foundation" / "mpl-bubblegum").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=TOOL, check=True, capture_output=True,
            timeout=300,
        )  # fmt: skip

    printed = subprocess.run(
        [node, "generate.js"], cwd=TOOL, capture_output=True, text=True, check=True, timeout=60
    )

    assert json.loads(printed.stdout) == VECTORS
