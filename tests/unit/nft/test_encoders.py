"""Token-2022 MetadataPointer and TokenMetadata encoders, byte for byte against published
vectors: solana-program-library token/js/test/unit/metadataPointer.test.ts and
token-metadata/js/test/instruction.test.ts (whose bytes are "output of rust implementation")."""

from __future__ import annotations

from solders.pubkey import Pubkey
from spl.token.constants import TOKEN_2022_PROGRAM_ID

from queue_pipelines.nft import token2022

PROGRAM = Pubkey.from_string("22222222222222222222222222222222222222222222")
METADATA = Pubkey.from_string("33333333333333333333333333333333333333333333")
UPDATE_AUTHORITY = Pubkey.from_string("44444444444444444444444444444444444444444444")
MINT = Pubkey.from_string("55555555555555555555555555555555555555555555")
MINT_AUTHORITY = Pubkey.from_string("66666666666666666666666666666666666666666666")


def metas(instruction):
    return [(m.pubkey, m.is_signer, m.is_writable) for m in instruction.accounts]


def test_initialize_metadata_pointer_matches_the_published_vector():
    authority = Pubkey(bytes([8] * 32))
    address = Pubkey(bytes([5] * 32))
    mint = Pubkey.new_unique()

    instruction = token2022.initialize_metadata_pointer(mint, authority, address)

    assert instruction.program_id == TOKEN_2022_PROGRAM_ID
    assert bytes(instruction.data) == bytes([39, 0]) + bytes([8] * 32) + bytes([5] * 32)
    assert metas(instruction) == [(mint, False, True)]


def test_metadata_pointer_without_authority_writes_zeroes():
    address = Pubkey(bytes([5] * 32))
    instruction = token2022.initialize_metadata_pointer(Pubkey.new_unique(), None, address)
    assert bytes(instruction.data) == bytes([39, 0]) + bytes(32) + bytes([5] * 32)


def test_initialize_token_metadata_matches_the_published_vector():
    instruction = token2022.initialize_token_metadata(
        metadata=METADATA,
        update_authority=UPDATE_AUTHORITY,
        mint=MINT,
        mint_authority=MINT_AUTHORITY,
        name="My test token",
        symbol="TEST",
        uri="http://test.test",
        program_id=PROGRAM,
    )

    assert bytes(instruction.data) == bytes(
        [210, 225, 30, 162, 88, 184, 77, 141, 13, 0, 0, 0, 77, 121, 32, 116, 101, 115, 116,
         32, 116, 111, 107, 101, 110, 4, 0, 0, 0, 84, 69, 83, 84, 16, 0, 0, 0, 104, 116, 116,
         112, 58, 47, 47, 116, 101, 115, 116, 46, 116, 101, 115, 116]
    )  # fmt: skip
    assert instruction.program_id == PROGRAM
    assert metas(instruction) == [
        (METADATA, False, True),
        (UPDATE_AUTHORITY, False, False),
        (MINT, False, False),
        (MINT_AUTHORITY, True, False),
    ]


def test_update_field_with_a_custom_key_matches_the_published_vector():
    instruction = token2022.update_token_metadata_field(
        metadata=METADATA,
        update_authority=UPDATE_AUTHORITY,
        field="MyTestField",
        value="http://test.uri",
        program_id=PROGRAM,
    )

    assert bytes(instruction.data) == bytes(
        [221, 233, 49, 45, 181, 202, 220, 200, 3, 11, 0, 0, 0, 77, 121, 84, 101, 115, 116, 70,
         105, 101, 108, 100, 15, 0, 0, 0, 104, 116, 116, 112, 58, 47, 47, 116, 101, 115, 116,
         46, 117, 114, 105]
    )  # fmt: skip
    assert metas(instruction) == [(METADATA, False, True), (UPDATE_AUTHORITY, True, False)]


def test_update_field_name_matches_the_published_vector():
    instruction = token2022.update_token_metadata_field(
        metadata=METADATA,
        update_authority=UPDATE_AUTHORITY,
        field="name",
        value="http://test.uri",
        program_id=PROGRAM,
    )

    assert bytes(instruction.data) == bytes(
        [221, 233, 49, 45, 181, 202, 220, 200, 0, 15, 0, 0, 0, 104, 116, 116, 112, 58, 47, 47,
         116, 101, 115, 116, 46, 117, 114, 105]
    )  # fmt: skip


def test_token_metadata_decoder_reads_what_the_encoder_layout_writes():
    # The TLV value of a TokenMetadata entry, laid out by hand from the interface's state.rs.
    def s(text):
        return len(text).to_bytes(4, "little") + text.encode()

    value = (
        bytes(UPDATE_AUTHORITY) + bytes(MINT) + s("N") + s("S") + s("U")
        + (1).to_bytes(4, "little") + s("seat") + s("A-1")
    )  # fmt: skip

    decoded = token2022.decode_token_metadata(value)

    assert decoded == token2022.TokenMetadata(
        UPDATE_AUTHORITY, MINT, "N", "S", "U", {"seat": "A-1"}
    )
    assert len(value) + 4 == token2022.token_metadata_size("N", "S", "U", {"seat": "A-1"})
