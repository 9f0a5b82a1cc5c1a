"""Metaplex Bubblegum (compressed NFTs, version 1 leaves): tree creation, `mintV1` and
`transfer`, encoded here, with the addresses and leaf hashes they need.

A compressed NFT is a leaf of a concurrent Merkle tree (SPL Account Compression), not an
account: Bubblegum appends the leaf `keccak(1, asset id, owner, delegate, nonce, data_hash,
creator_hash)` on `mintV1`, and `transfer` replaces it after checking the caller's proof.

Layouts (the generated clients of @metaplex-foundation/mpl-bubblegum, which follow the
program's Anchor IDL): each instruction's data is its 8-byte Anchor discriminator and its
borsh arguments; `createTreeConfig { max_depth: u32, max_buffer_size: u32, public:
Option<bool> }`; `mintV1 { metadata: MetadataArgs }`; `transfer { root, data_hash,
creator_hash: [u8; 32], nonce: u64, index: u32 }`, the proof nodes the tree's canopy does not
hold following the accounts. The tree account itself is created beforehand by the system
program, owned by the compression program, of `merkle_tree_size` bytes.

The Bubblegum and Account Compression programs are not available here, so nothing built from
this module has been executed: tests/nft/test_bubblegum.py checks every byte, account meta,
address and hash against vectors generated with Metaplex's published client
(tools/bubblegum-vectors). docs/nft.md says what that does and does not prove.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from Crypto.Hash import keccak
from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account

from queue_pipelines.nft.metaplex import Creator

BUBBLEGUM_PROGRAM_ID = Pubkey.from_string("BGUMAp9Gq7iTEuizy4pqaxsTyUCBK68MDfK752saRPUY")
ACCOUNT_COMPRESSION_PROGRAM_ID = Pubkey.from_string("cmtDvXumGCrqC1Age74AVPhSRVXJMd8PJS91L8KbNCK")
# Bubblegum logs each leaf through this program, where indexers read it.
NOOP_PROGRAM_ID = Pubkey.from_string("noopb9bkMVfRPU8AsbpTUg8AQkHtKwMYZiFUjNRtMmV")
SYSTEM_PROGRAM_ID = Pubkey.from_string("11111111111111111111111111111111")

CREATE_TREE_CONFIG = bytes([165, 83, 136, 142, 89, 202, 47, 220])
MINT_V1 = bytes([145, 98, 192, 118, 184, 147, 118, 104])
TRANSFER = bytes([163, 52, 200, 231, 140, 3, 69, 186])
TREE_CONFIG_ACCOUNT = bytes([122, 245, 175, 248, 171, 34, 0, 207])

LEAF_SCHEMA_V1 = 1
TOKEN_STANDARD_NON_FUNGIBLE = 0
TOKEN_PROGRAM_VERSION_ORIGINAL = 0


def keccak256(*parts: bytes) -> bytes:
    digest = keccak.new(digest_bits=256)
    for part in parts:
        digest.update(part)
    return digest.digest()


def merkle_tree_size(max_depth: int, max_buffer_size: int, canopy_depth: int = 0) -> int:
    """Bytes of a concurrent Merkle tree account (spl-account-compression): a type byte, the
    V1 header (version, max buffer size, max depth, authority, creation slot, padding), the
    tree (sequence number, active index, buffer size, `max_buffer_size` change logs of a root,
    a path and an index, and the rightmost proof) and the canopy's nodes."""
    header = 1 + 4 + 4 + 32 + 8 + 6
    path = 32 * max_depth + 32 + 4 + 4
    change_log = 32 + 32 * max_depth + 4 + 4
    tree = 3 * 8 + max_buffer_size * change_log + path
    canopy = 32 * max((1 << (canopy_depth + 1)) - 2, 0)
    return 1 + header + tree + canopy


def tree_config_address(merkle_tree: Pubkey) -> Pubkey:
    """The tree's config (Bubblegum's "tree authority"): seeds [merkle tree]."""
    address, _bump = Pubkey.find_program_address([bytes(merkle_tree)], BUBBLEGUM_PROGRAM_ID)
    return address


def asset_id(merkle_tree: Pubkey, nonce: int) -> Pubkey:
    """A compressed NFT's id: seeds ["asset", merkle tree, nonce as u64]. Its nonce is the
    tree's mint count when it was minted."""
    address, _bump = Pubkey.find_program_address(
        [b"asset", bytes(merkle_tree), struct.pack("<Q", nonce)], BUBBLEGUM_PROGRAM_ID
    )
    return address


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<I", len(raw)) + raw


def _creators(creators: list[Creator]) -> bytes:
    return b"".join(bytes(c.address) + bytes([int(c.verified), c.share]) for c in creators)


@dataclass(frozen=True)
class MetadataArgs:
    """A compressed NFT's metadata (Bubblegum's `MetadataArgs`), as tickets use it: a
    non-fungible of the original token program, no edition nonce, no uses."""

    name: str
    symbol: str
    uri: str
    seller_fee_basis_points: int
    creators: tuple[Creator, ...]
    # Joins unverified: verifying needs the collection's authority (mintToCollectionV1).
    collection: Pubkey | None = None
    is_mutable: bool = True
    primary_sale_happened: bool = False

    def encode(self) -> bytes:
        if not 0 <= self.seller_fee_basis_points <= 10_000:
            raise ValueError("seller_fee_basis_points must be 0..10000")
        return (
            _string(self.name)
            + _string(self.symbol)
            + _string(self.uri)
            + struct.pack("<H", self.seller_fee_basis_points)
            + bytes([int(self.primary_sale_happened), int(self.is_mutable)])
            + b"\x00"  # edition nonce: none
            + bytes([1, TOKEN_STANDARD_NON_FUNGIBLE])
            + (b"\x01\x00" + bytes(self.collection) if self.collection else b"\x00")
            + b"\x00"  # uses: none
            + bytes([TOKEN_PROGRAM_VERSION_ORIGINAL])
            + struct.pack("<I", len(self.creators))
            + _creators(list(self.creators))
        )

    def data_hash(self) -> bytes:
        """What the leaf commits to of the metadata: keccak(keccak(args), seller fee)."""
        return keccak256(keccak256(self.encode()), struct.pack("<H", self.seller_fee_basis_points))

    def creator_hash(self) -> bytes:
        return keccak256(_creators(list(self.creators)))


def leaf_hash(
    merkle_tree: Pubkey,
    nonce: int,
    owner: Pubkey,
    delegate: Pubkey,
    data_hash: bytes,
    creator_hash: bytes,
) -> bytes:
    """The tree's leaf for a version 1 compressed NFT."""
    return keccak256(
        bytes([LEAF_SCHEMA_V1]),
        bytes(asset_id(merkle_tree, nonce)),
        bytes(owner),
        bytes(delegate),
        struct.pack("<Q", nonce),
        data_hash,
        creator_hash,
    )


def _meta(pubkey: Pubkey, signer: bool = False, writable: bool = False) -> AccountMeta:
    return AccountMeta(pubkey, is_signer=signer, is_writable=writable)


def _programs() -> list[AccountMeta]:
    return [_meta(NOOP_PROGRAM_ID), _meta(ACCOUNT_COMPRESSION_PROGRAM_ID), _meta(SYSTEM_PROGRAM_ID)]


def create_tree_instructions(
    *,
    payer: Pubkey,
    merkle_tree: Pubkey,
    tree_creator: Pubkey,
    max_depth: int,
    max_buffer_size: int,
    canopy_depth: int,
    lamports: int,
    public: bool | None = None,
) -> list[Instruction]:
    """The empty tree account (its keypair signs), then its Bubblegum config; the tree
    creator may mint into it (anyone may if `public`)."""
    allocate = create_account(
        CreateAccountParams(
            from_pubkey=payer,
            to_pubkey=merkle_tree,
            lamports=lamports,
            space=merkle_tree_size(max_depth, max_buffer_size, canopy_depth),
            owner=ACCOUNT_COMPRESSION_PROGRAM_ID,
        )
    )
    data = (
        CREATE_TREE_CONFIG
        + struct.pack("<II", max_depth, max_buffer_size)
        + (b"\x00" if public is None else bytes([1, int(public)]))
    )
    config = Instruction(
        BUBBLEGUM_PROGRAM_ID,
        data,
        [
            _meta(tree_config_address(merkle_tree), writable=True),
            _meta(merkle_tree, writable=True),
            _meta(payer, signer=True, writable=True),
            _meta(tree_creator, signer=True),
            *_programs(),
        ],
    )
    return [allocate, config]


def mint_v1(
    *,
    merkle_tree: Pubkey,
    leaf_owner: Pubkey,
    payer: Pubkey,
    tree_creator_or_delegate: Pubkey,
    metadata: MetadataArgs,
    leaf_delegate: Pubkey | None = None,
) -> Instruction:
    """Append a compressed NFT to the tree. A creator marked verified must sign: the payer
    and the tree's creator or delegate count as signed."""
    return Instruction(
        BUBBLEGUM_PROGRAM_ID,
        MINT_V1 + metadata.encode(),
        [
            _meta(tree_config_address(merkle_tree), writable=True),
            _meta(leaf_owner),
            _meta(leaf_delegate or leaf_owner),
            _meta(merkle_tree, writable=True),
            _meta(payer, signer=True),
            _meta(tree_creator_or_delegate, signer=True),
            *_programs(),
        ],
    )


def transfer(
    *,
    merkle_tree: Pubkey,
    leaf_owner: Pubkey,
    new_leaf_owner: Pubkey,
    root: bytes,
    data_hash: bytes,
    creator_hash: bytes,
    nonce: int,
    index: int,
    proof: list[Pubkey],
    leaf_delegate: Pubkey | None = None,
) -> Instruction:
    """Give the leaf to `new_leaf_owner`, signed by its owner. `root`, the hashes, `nonce`,
    `index` (the leaf's position; equal to the nonce for a leaf minted by mintV1) and `proof`
    (the path's nodes below the canopy) describe the leaf as the tree holds it now: on a
    cluster they come from an indexer (DAS `getAsset` and `getAssetProof`)."""
    for name, value in (("root", root), ("data_hash", data_hash), ("creator_hash", creator_hash)):
        if len(value) != 32:
            raise ValueError(f"{name} must be 32 bytes")
    return Instruction(
        BUBBLEGUM_PROGRAM_ID,
        TRANSFER + root + data_hash + creator_hash + struct.pack("<QI", nonce, index),
        [
            _meta(tree_config_address(merkle_tree)),
            _meta(leaf_owner, signer=True),
            # No delegate: the owner stands in its place, signer as it is (Metaplex's client
            # does the same; the transaction merges the two metas anyway).
            _meta(leaf_delegate or leaf_owner, signer=leaf_delegate is None),
            _meta(new_leaf_owner),
            _meta(merkle_tree, writable=True),
            *_programs(),
            *[_meta(node) for node in proof],
        ],
    )


@dataclass(frozen=True)
class TreeConfig:
    tree_creator: Pubkey
    tree_delegate: Pubkey
    total_mint_capacity: int
    num_minted: int  # the nonce of the next leaf minted
    is_public: bool


def decode_tree_config(data: bytes) -> TreeConfig:
    """A TreeConfig account's fields (the decompression and version fields that follow are
    not needed here)."""
    if data[:8] != TREE_CONFIG_ACCOUNT:
        raise ValueError("not a Bubblegum TreeConfig account")
    capacity, minted = struct.unpack_from("<QQ", data, 72)
    return TreeConfig(
        tree_creator=Pubkey.from_bytes(data[8:40]),
        tree_delegate=Pubkey.from_bytes(data[40:72]),
        total_mint_capacity=capacity,
        num_minted=minted,
        is_public=bool(data[88]),
    )
