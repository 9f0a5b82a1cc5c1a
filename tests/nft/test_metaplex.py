"""CreateMetadataAccountV3, byte for byte against Metaplex's own published serializer
(@metaplex-foundation/mpl-token-metadata 3.4.0, run with the machine's Node.js from
tools/metaplex-vectors, installed there by `npm ci` from its lock file). The Metaplex
program itself is not available here, so these bytes are never executed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from solders.pubkey import Pubkey

from queue_pipelines.nft import metaplex
from tests.support.requirements import node_with_packages

TOOL = Path(__file__).resolve().parents[2] / "tools" / "metaplex-vectors"


@pytest.fixture(scope="session")
def metaplex_serialize():
    node = node_with_packages(
        TOOL, "@metaplex-foundation/mpl-token-metadata", "to run Metaplex's serializer"
    )

    def serialize(cases: list[dict]) -> list[bytes]:
        result = subprocess.run(
            [node, "serialize.js"], cwd=TOOL, input=json.dumps(cases), capture_output=True,
            text=True, check=True, timeout=60,
        )  # fmt: skip
        return [bytes.fromhex(h) for h in json.loads(result.stdout)]

    return serialize


CREATOR_A = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
CREATOR_B = "SysvarRent111111111111111111111111111111111"
COLLECTION = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"

CASES = [
    # a ticket in a collection with a 5% royalty and the seller as sole creator
    {"name": "Aurora Live #1", "symbol": "AUR", "uri": "https://tickets.example/1.json",
     "seller_fee_basis_points": 500, "creators": [{"address": CREATOR_A, "verified": True,
     "share": 100}], "collection": COLLECTION, "is_mutable": True},
    # no creators, no collection, immutable
    {"name": "A", "symbol": "B", "uri": "", "seller_fee_basis_points": 0, "creators": None,
     "collection": None, "is_mutable": False},
    # two creators splitting, full-length fields, non-ASCII text, maximum royalty
    {"name": "Orchestre — Salle Pleyel №12 ", "symbol": "ÉVÉNEMENT", "uri": "https://x.example/"
     + "a" * 182, "seller_fee_basis_points": 10_000, "creators": [{"address": CREATOR_A,
     "verified": True, "share": 70}, {"address": CREATOR_B, "verified": False, "share": 30}],
     "collection": None, "is_mutable": True},
    # an empty creator list is not the same as no creators
    {"name": "Empty", "symbol": "E", "uri": "u", "seller_fee_basis_points": 1, "creators": [],
     "collection": COLLECTION, "is_mutable": True},
]  # fmt: skip


def encode(case: dict) -> bytes:
    creators = case["creators"]
    return metaplex.create_metadata_account_v3_data(
        name=case["name"],
        symbol=case["symbol"],
        uri=case["uri"],
        seller_fee_basis_points=case["seller_fee_basis_points"],
        creators=None
        if creators is None
        else [
            metaplex.Creator(Pubkey.from_string(c["address"]), c["verified"], c["share"])
            for c in creators
        ],
        collection=Pubkey.from_string(case["collection"]) if case["collection"] else None,
        is_mutable=case["is_mutable"],
    )


def test_instruction_data_matches_metaplex_serializer_byte_for_byte(metaplex_serialize):
    expected = metaplex_serialize(CASES)

    assert len(expected) == len(CASES)
    for case, reference in zip(CASES, expected, strict=True):
        assert encode(case) == reference, case["name"]
    assert expected[0][0] == metaplex.CREATE_METADATA_ACCOUNT_V3


def test_instruction_accounts_follow_the_published_layout():
    mint, authority, payer = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    instruction = metaplex.create_metadata_account_v3(
        mint=mint, mint_authority=authority, payer=payer, update_authority=authority,
        name="N", symbol="S", uri="U", seller_fee_basis_points=0,
    )  # fmt: skip

    expected_metadata, _ = Pubkey.find_program_address(
        [b"metadata", bytes(metaplex.TOKEN_METADATA_PROGRAM_ID), bytes(mint)],
        metaplex.TOKEN_METADATA_PROGRAM_ID,
    )
    assert instruction.program_id == metaplex.TOKEN_METADATA_PROGRAM_ID
    assert [(m.pubkey, m.is_signer, m.is_writable) for m in instruction.accounts] == [
        (expected_metadata, False, True),
        (mint, False, False),
        (authority, True, False),
        (payer, True, True),
        (authority, False, False),
        (metaplex.SYSTEM_PROGRAM_ID, False, False),
        (metaplex.TOKEN_METADATA_PROGRAM_ID, False, False),
    ]
