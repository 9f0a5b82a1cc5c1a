"""Token-2022 MetadataPointer and TokenMetadata: instruction encoders and account decoders.

solana-py has no encoder for either extension, so these follow the published layouts:

- MetadataPointer (spl-token-2022 `extension::metadata_pointer::instruction`): token
  instruction 39, then the sub-instruction (0 = Initialize), then `OptionalNonZeroPubkey`
  authority and metadata address, 32 bytes each, all zeroes meaning "none".
- TokenMetadata (spl-token-metadata-interface `instruction`): an 8-byte discriminator, the
  first 8 bytes of sha256("spl_token_metadata_interface:<name>"), then borsh-encoded
  arguments (strings as u32 little-endian length + UTF-8 bytes; `Field` as a borsh enum:
  0 name, 1 symbol, 2 uri, 3 key(string)).

tests/unit/nft/test_encoders.py checks every encoder byte for byte against the vectors in
solana-program-library's JS tests (token/js/test/unit/metadataPointer.test.ts and
token-metadata/js/test/instruction.test.ts, whose bytes are "output of rust implementation").
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from spl.token.constants import TOKEN_2022_PROGRAM_ID

METADATA_POINTER_EXTENSION_INSTRUCTION = 39
METADATA_POINTER_INITIALIZE = 0

# Extension types in a Token-2022 account's TLV area (spl-token-2022 `ExtensionType`).
EXTENSION_METADATA_POINTER = 18
EXTENSION_TOKEN_METADATA = 19

MINT_BASE_SIZE = 82
# Mint and token accounts with extensions are padded to the token account's base size, then
# carry one account-type byte before the TLV entries.
ACCOUNT_TYPE_OFFSET = 165
TLV_HEADER_SIZE = 4
METADATA_POINTER_SIZE = 64

FIELD_NAME, FIELD_SYMBOL, FIELD_URI, FIELD_KEY = 0, 1, 2, 3


def interface_discriminator(name: str) -> bytes:
    return hashlib.sha256(f"spl_token_metadata_interface:{name}".encode()).digest()[:8]


INITIALIZE_DISCRIMINATOR = interface_discriminator("initialize_account")
UPDATE_FIELD_DISCRIMINATOR = interface_discriminator("updating_field")


def _optional_pubkey(key: Pubkey | None) -> bytes:
    return bytes(key) if key is not None else bytes(32)


def _borsh_string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<I", len(raw)) + raw


def initialize_metadata_pointer(
    mint: Pubkey,
    authority: Pubkey | None,
    metadata_address: Pubkey | None,
    program_id: Pubkey = TOKEN_2022_PROGRAM_ID,
) -> Instruction:
    """Must precede InitializeMint in the same transaction."""
    data = (
        bytes([METADATA_POINTER_EXTENSION_INSTRUCTION, METADATA_POINTER_INITIALIZE])
        + _optional_pubkey(authority)
        + _optional_pubkey(metadata_address)
    )
    return Instruction(program_id, data, [AccountMeta(mint, is_signer=False, is_writable=True)])


def initialize_token_metadata(
    *,
    metadata: Pubkey,
    update_authority: Pubkey,
    mint: Pubkey,
    mint_authority: Pubkey,
    name: str,
    symbol: str,
    uri: str,
    program_id: Pubkey = TOKEN_2022_PROGRAM_ID,
) -> Instruction:
    data = (
        INITIALIZE_DISCRIMINATOR + _borsh_string(name) + _borsh_string(symbol) + _borsh_string(uri)
    )
    return Instruction(
        program_id,
        data,
        [
            AccountMeta(metadata, is_signer=False, is_writable=True),
            AccountMeta(update_authority, is_signer=False, is_writable=False),
            AccountMeta(mint, is_signer=False, is_writable=False),
            AccountMeta(mint_authority, is_signer=True, is_writable=False),
        ],
    )


_NAMED_FIELDS = {"name": FIELD_NAME, "symbol": FIELD_SYMBOL, "uri": FIELD_URI}


def update_token_metadata_field(
    *,
    metadata: Pubkey,
    update_authority: Pubkey,
    field: str,
    value: str,
    program_id: Pubkey = TOKEN_2022_PROGRAM_ID,
) -> Instruction:
    """`field` "name", "symbol" or "uri" sets that field; any other is an additional key."""
    if field in _NAMED_FIELDS:
        encoded_field = bytes([_NAMED_FIELDS[field]])
    else:
        encoded_field = bytes([FIELD_KEY]) + _borsh_string(field)
    data = UPDATE_FIELD_DISCRIMINATOR + encoded_field + _borsh_string(value)
    return Instruction(
        program_id,
        data,
        [
            AccountMeta(metadata, is_signer=False, is_writable=True),
            AccountMeta(update_authority, is_signer=True, is_writable=False),
        ],
    )


def token_metadata_size(name: str, symbol: str, uri: str, additional: dict[str, str]) -> int:
    """Bytes the TokenMetadata TLV entry takes, header included (for the rent deposit)."""
    strings = [name, symbol, uri, *(k for k in additional), *(v for v in additional.values())]
    return TLV_HEADER_SIZE + 32 + 32 + 4 + sum(4 + len(s.encode()) for s in strings)


MINT_WITH_METADATA_POINTER_SIZE = ACCOUNT_TYPE_OFFSET + 1 + TLV_HEADER_SIZE + METADATA_POINTER_SIZE


@dataclass(frozen=True)
class TokenMetadata:
    update_authority: Pubkey | None
    mint: Pubkey
    name: str
    symbol: str
    uri: str
    additional: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MintState:
    mint_authority: Pubkey | None
    supply: int
    decimals: int
    is_initialized: bool
    freeze_authority: Pubkey | None
    metadata_pointer: tuple[Pubkey | None, Pubkey | None] | None  # (authority, address)
    metadata: TokenMetadata | None


def _coption_pubkey(data: bytes, offset: int) -> Pubkey | None:
    (tag,) = struct.unpack_from("<I", data, offset)
    return Pubkey.from_bytes(data[offset + 4 : offset + 36]) if tag else None


def _nonzero_pubkey(raw: bytes) -> Pubkey | None:
    return Pubkey.from_bytes(raw) if any(raw) else None


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def take(self, size: int) -> bytes:
        chunk = self.data[self.offset : self.offset + size]
        if len(chunk) != size:
            raise ValueError("token metadata entry is truncated")
        self.offset += size
        return chunk

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        return self.take(self.u32()).decode()


def decode_token_metadata(value: bytes) -> TokenMetadata:
    reader = _Reader(value)
    update_authority = _nonzero_pubkey(reader.take(32))
    mint = Pubkey.from_bytes(reader.take(32))
    name, symbol, uri = reader.string(), reader.string(), reader.string()
    additional = {}
    for _ in range(reader.u32()):
        key = reader.string()
        additional[key] = reader.string()
    return TokenMetadata(update_authority, mint, name, symbol, uri, additional)


def tlv_entries(data: bytes) -> dict[int, bytes]:
    entries: dict[int, bytes] = {}
    offset = ACCOUNT_TYPE_OFFSET + 1
    while offset + TLV_HEADER_SIZE <= len(data):
        kind, length = struct.unpack_from("<HH", data, offset)
        if kind == 0:  # uninitialized: the rest is padding
            break
        entries[kind] = data[offset + TLV_HEADER_SIZE : offset + TLV_HEADER_SIZE + length]
        offset += TLV_HEADER_SIZE + length
    return entries


def decode_mint(data: bytes) -> MintState:
    """A classic SPL or Token-2022 mint account, with the two metadata extensions if any."""
    if len(data) < MINT_BASE_SIZE:
        raise ValueError(f"{len(data)} bytes is too short for a mint account")
    (supply,) = struct.unpack_from("<Q", data, 36)
    entries = tlv_entries(data) if len(data) > ACCOUNT_TYPE_OFFSET else {}
    pointer = entries.get(EXTENSION_METADATA_POINTER)
    metadata = entries.get(EXTENSION_TOKEN_METADATA)
    return MintState(
        mint_authority=_coption_pubkey(data, 0),
        supply=supply,
        decimals=data[44],
        is_initialized=bool(data[45]),
        freeze_authority=_coption_pubkey(data, 46),
        metadata_pointer=(_nonzero_pubkey(pointer[:32]), _nonzero_pubkey(pointer[32:64]))
        if pointer
        else None,
        metadata=decode_token_metadata(metadata) if metadata else None,
    )


@dataclass(frozen=True)
class TokenAccountState:
    mint: Pubkey
    owner: Pubkey
    amount: int
    delegate: Pubkey | None


ACCOUNT_TYPE_TOKEN_ACCOUNT = 2


def is_token_account(data: bytes) -> bool:
    """A token account (not a mint) of the classic or the 2022 program."""
    return len(data) == 165 or (
        len(data) > ACCOUNT_TYPE_OFFSET and data[ACCOUNT_TYPE_OFFSET] == ACCOUNT_TYPE_TOKEN_ACCOUNT
    )


def decode_token_account(data: bytes) -> TokenAccountState:
    if len(data) < 165:
        raise ValueError(f"{len(data)} bytes is too short for a token account")
    (amount,) = struct.unpack_from("<Q", data, 64)
    return TokenAccountState(
        mint=Pubkey.from_bytes(data[0:32]),
        owner=Pubkey.from_bytes(data[32:64]),
        amount=amount,
        delegate=_coption_pubkey(data, 72),
    )
