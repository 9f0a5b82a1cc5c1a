"""Metaplex Token Metadata: the CreateMetadataAccountV3 instruction, encoded here.

Layout (mpl-token-metadata, clients/rust/src/generated/instructions/
create_metadata_account_v3.rs and types/data_v2.rs): discriminator 33, then borsh
`CreateMetadataAccountArgsV3 { data: DataV2, is_mutable: bool, collection_details:
Option<CollectionDetails> }` with `DataV2 { name, symbol, uri: String,
seller_fee_basis_points: u16, creators: Option<Vec<Creator{address, verified: bool, share:
u8}>>, collection: Option<Collection{verified: bool, key}>, uses: Option<Uses> }`.
Accounts: metadata PDA (writable), mint, mint authority (signer), payer (writable signer),
update authority, system program, and the rent sysvar (or the program id in its place).

The Metaplex program binary is not available here, so nothing built from this encoder has
been executed: tests/nft/test_metaplex.py checks its bytes against Metaplex's own published
serializer (@metaplex-foundation/mpl-token-metadata, pinned in tools/metaplex-vectors) for
several argument sets. mint_job does not mint this standard yet (docs/nft.md).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

TOKEN_METADATA_PROGRAM_ID = Pubkey.from_string("metaqbxxUerdq28cj1RbAWkYQm3ybzjb6a8bt518x1s")
SYSTEM_PROGRAM_ID = Pubkey.from_string("11111111111111111111111111111111")
CREATE_METADATA_ACCOUNT_V3 = 33
# Size of a Metadata account (mpl-token-metadata MAX_METADATA_LEN): the rent the program
# takes from the payer when it creates one.
MAX_METADATA_LEN = 679


@dataclass(frozen=True)
class Creator:
    address: Pubkey
    verified: bool
    share: int  # percent, the creators' shares sum to 100


def metadata_address(mint: Pubkey) -> Pubkey:
    """The metadata PDA: seeds ["metadata", program id, mint]."""
    address, _bump = Pubkey.find_program_address(
        [b"metadata", bytes(TOKEN_METADATA_PROGRAM_ID), bytes(mint)], TOKEN_METADATA_PROGRAM_ID
    )
    return address


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<I", len(raw)) + raw


def _option(present: bool, body: bytes = b"") -> bytes:
    return b"\x01" + body if present else b"\x00"


def create_metadata_account_v3_data(
    *,
    name: str,
    symbol: str,
    uri: str,
    seller_fee_basis_points: int,
    creators: list[Creator] | None,
    collection: Pubkey | None,
    is_mutable: bool = True,
) -> bytes:
    if not 0 <= seller_fee_basis_points <= 10_000:
        raise ValueError("seller_fee_basis_points must be 0..10000")
    creators_body = b""
    if creators is not None:
        creators_body = struct.pack("<I", len(creators)) + b"".join(
            bytes(c.address) + bytes([int(c.verified), c.share]) for c in creators
        )
    data = (
        _string(name)
        + _string(symbol)
        + _string(uri)
        + struct.pack("<H", seller_fee_basis_points)
        + _option(creators is not None, creators_body)
        # A collection starts unverified: the collection's authority verifies it separately.
        + _option(collection is not None, b"\x00" + bytes(collection) if collection else b"")
        + _option(False)  # uses
    )
    return bytes([CREATE_METADATA_ACCOUNT_V3]) + data + bytes([int(is_mutable)]) + _option(False)


def create_metadata_account_v3(
    *,
    mint: Pubkey,
    mint_authority: Pubkey,
    payer: Pubkey,
    update_authority: Pubkey,
    name: str,
    symbol: str,
    uri: str,
    seller_fee_basis_points: int,
    creators: list[Creator] | None = None,
    collection: Pubkey | None = None,
    is_mutable: bool = True,
) -> Instruction:
    data = create_metadata_account_v3_data(
        name=name,
        symbol=symbol,
        uri=uri,
        seller_fee_basis_points=seller_fee_basis_points,
        creators=creators,
        collection=collection,
        is_mutable=is_mutable,
    )
    return Instruction(
        TOKEN_METADATA_PROGRAM_ID,
        data,
        [
            AccountMeta(metadata_address(mint), is_signer=False, is_writable=True),
            AccountMeta(mint, is_signer=False, is_writable=False),
            AccountMeta(mint_authority, is_signer=True, is_writable=False),
            AccountMeta(payer, is_signer=True, is_writable=True),
            AccountMeta(update_authority, is_signer=False, is_writable=False),
            AccountMeta(SYSTEM_PROGRAM_ID, is_signer=False, is_writable=False),
            # The optional rent account, left out the way Metaplex's clients do.
            AccountMeta(TOKEN_METADATA_PROGRAM_ID, is_signer=False, is_writable=False),
        ],
    )
