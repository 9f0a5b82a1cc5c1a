"""The instructions of a ticket's one atomic mint transaction, per standard: Token-2022 with
its own metadata, or a classic SPL mint with Metaplex Token Metadata."""

from __future__ import annotations

from solders.instruction import Instruction
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from spl.token import instructions as token_ix
from spl.token import models as token_models
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID

from queue_pipelines.nft import metaplex, token2022


def _initialize_nft_mint(mint: Pubkey, payer: Pubkey, program_id: Pubkey) -> Instruction:
    """Decimals 0, no freeze authority, the payer minting (until revoked)."""
    return token_ix.initialize_mint2(
        token_models.InitializeMint2Params(
            decimals=0,
            program_id=program_id,
            mint=mint,
            mint_authority=payer,
            freeze_authority=None,
        )
    )


def _one_token_to_owner(
    payer: Pubkey, mint: Pubkey, owner: Pubkey, program_id: Pubkey
) -> list[Instruction]:
    """The owner's associated token account (if missing), one token into it, and the mint
    authority revoked, so the supply stays 1 for good."""
    ata = token_ix.get_associated_token_address(owner, mint, program_id)
    return [
        token_ix.create_idempotent_associated_token_account(payer, owner, mint, program_id),
        token_ix.mint_to(
            token_models.MintToParams(
                program_id=program_id, mint=mint, dest=ata, mint_authority=payer, amount=1
            )
        ),
        token_ix.set_authority(
            token_models.SetAuthorityParams(
                program_id=program_id,
                account=mint,
                authority=token_ix.AuthorityType.MINT_TOKENS,
                current_authority=payer,
                new_authority=None,
            )
        ),
    ]


def token2022_mint_instructions(
    *,
    payer: Pubkey,
    mint: Pubkey,
    owner: Pubkey,
    name: str,
    symbol: str,
    uri: str,
    additional: dict[str, str],
    mint_rent: int,
) -> list[Instruction]:
    """One atomic transaction: mint with MetadataPointer (to itself) and TokenMetadata,
    decimals 0, one token to the owner's associated token account, mint authority revoked.
    The payer keeps the metadata update authority, so a misprinted seat can be corrected."""
    return [
        create_account(
            CreateAccountParams(
                from_pubkey=payer,
                to_pubkey=mint,
                lamports=mint_rent,
                # TokenMetadata reallocates the account itself; it only needs the rent paid.
                space=token2022.MINT_WITH_METADATA_POINTER_SIZE,
                owner=TOKEN_2022_PROGRAM_ID,
            )
        ),
        token2022.initialize_metadata_pointer(mint, payer, mint),
        _initialize_nft_mint(mint, payer, TOKEN_2022_PROGRAM_ID),
        token2022.initialize_token_metadata(
            metadata=mint,
            update_authority=payer,
            mint=mint,
            mint_authority=payer,
            name=name,
            symbol=symbol,
            uri=uri,
        ),
        *[
            token2022.update_token_metadata_field(
                metadata=mint, update_authority=payer, field=k, value=v
            )
            for k, v in additional.items()
        ],
        *_one_token_to_owner(payer, mint, owner, TOKEN_2022_PROGRAM_ID),
    ]


def metaplex_mint_instructions(
    *,
    payer: Pubkey,
    mint: Pubkey,
    owner: Pubkey,
    name: str,
    symbol: str,
    uri: str,
    seller_fee_basis_points: int,
    collection: Pubkey | None,
    mint_rent: int,
) -> list[Instruction]:
    """The Metaplex standard, one atomic transaction on a classic SPL mint: mint account,
    decimals 0, the Token Metadata account (the payer as sole creator and update authority,
    seller fee and collection from the request), one token to the owner's associated token
    account, mint authority revoked. Never executed here: the Metaplex program is not
    available (docs/nft.md)."""
    return [
        create_account(
            CreateAccountParams(
                from_pubkey=payer,
                to_pubkey=mint,
                lamports=mint_rent,
                space=token2022.MINT_BASE_SIZE,
                owner=TOKEN_PROGRAM_ID,
            )
        ),
        _initialize_nft_mint(mint, payer, TOKEN_PROGRAM_ID),
        metaplex.create_metadata_account_v3(
            mint=mint,
            mint_authority=payer,
            payer=payer,
            update_authority=payer,
            name=name,
            symbol=symbol,
            uri=uri,
            seller_fee_basis_points=seller_fee_basis_points,
            creators=[metaplex.Creator(payer, verified=True, share=100)],
            collection=collection,
        ),
        *_one_token_to_owner(payer, mint, owner, TOKEN_PROGRAM_ID),
    ]
