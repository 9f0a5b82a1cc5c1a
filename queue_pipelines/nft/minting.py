"""Minting a ticket NFT to its buyer, at most once per request.

At most once is kept two ways (docs/nft.md):
1. the effect ledger, as for charges: claim `mint:tenant:key` before, record right after;
2. a deterministic mint address per request (`derived_mint_keypair`): every attempt for the
   same request creates the same mint account, in one atomic transaction, so a second
   attempt that reaches the chain cannot make a second NFT, and an attempt that finds the
   account already minted adopts it instead of minting again. This closes the gap the
   ledger alone leaves (a worker killed after the transaction landed, before recording it)
   without the Stripe-style time window.
A compressed ticket (`standard: compressed`) is a leaf with no address of its own, so only the
ledger keeps it single, and one in doubt is left to an operator (queue_pipelines/nft/compressed.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from queue_pipelines.effects import act_again, act_once
from queue_pipelines.failures import PermanentError
from queue_pipelines.intake.payloads import MintPayload
from queue_pipelines.ledger import EffectLedger, effect_key
from queue_pipelines.nft import bubblegum, compressed, metaplex, token2022
from queue_pipelines.nft.chain import AlreadyProcessed, Chain, require_funds
from queue_pipelines.nft.holders import MINT_ADDRESS_KIND, Holder, holder_of, mint_address_key
from queue_pipelines.nft.keys import derived_mint_keypair, parse_address
from queue_pipelines.nft.mint_instructions import (
    metaplex_mint_instructions,
    token2022_mint_instructions,
)
from queue_pipelines.nft.ticket_metadata import (
    check_onchain_fields,
    metadata_name,
    ticket_attributes,
    ticket_metadata,
)

# Signature fees of one mint transaction (2 signatures at 5000 lamports) with headroom.
FEE_HEADROOM = 50_000
TOKEN_2022_ACCOUNT_SIZE = 170  # base 165 + account type + ImmutableOwner (an ATA's extension)


@dataclass(frozen=True)
class MintOutcome:
    mint: str
    owner: str
    token_account: str
    uri: str
    name: str
    symbol: str
    standard: str
    signature: str | None  # None: adopted from an earlier attempt that landed unrecorded
    replayed: bool = False

    def recordable(self) -> dict[str, Any]:
        """What the ledger keeps: all but whether this attempt replayed it."""
        return {k: v for k, v in asdict(self).items() if k != "replayed"}


def mint_ticket_once(
    chain: Chain,
    payer: Keypair,
    ledger: EffectLedger,
    store_metadata,
    *,
    tenant_id: str,
    idempotency_key: str,
    payload: MintPayload,
    run_id: str,
) -> MintOutcome:
    """Store the ticket's metadata and mint it to the buyer, unless this request was minted.

    `store_metadata(name, document) -> uri` is the MetadataStore's `put`."""
    key = effect_key("mint", tenant_id, idempotency_key)
    effect = act_once(
        ledger,
        key,
        "mint",
        run_id,
        lambda: _mint(chain, payer, store_metadata, key, payload).recordable(),
        # The mint's address derives from the key: `_mint` finds an earlier attempt's ticket
        # on the chain and adopts it. A refusal (PermanentError) came before or from the
        # chain, where the transaction is atomic: it did not land. A compressed ticket has no
        # address of its own to find: in doubt, an operator decides.
        in_doubt=compressed.in_doubt if payload.standard == "compressed" else act_again,
        index_of=lambda result: (
            mint_address_key(result["mint"]),
            MINT_ADDRESS_KIND,
            {"tenant_id": tenant_id, "effect_key": key},
        ),
    )
    return MintOutcome(**effect.result, replayed=effect.replayed)


def _adopt_existing(chain: Chain, mint: Pubkey, owner: Pubkey) -> Holder:
    """The request's mint account exists: an earlier attempt landed. Accept it only if it is
    the finished NFT (the transaction is atomic, so anything else is not ours)."""
    state = token2022.decode_mint(chain.account(mint).data)
    holder = holder_of(chain, mint)
    if state.supply != 1 or state.mint_authority is not None or holder is None:
        raise PermanentError(
            f"mint account {mint} for this request exists but is not a finished ticket "
            f"(supply {state.supply}): reconcile it by hand",
            code="needs_reconciliation",
        )
    return holder


def _mint(chain: Chain, payer: Keypair, store_metadata, key: str, payload: MintPayload):
    owner = parse_address(payload.wallet, "buyer wallet")
    uri = payload.uri or store_metadata(metadata_name(key), ticket_metadata(payload))
    check_onchain_fields(payload.name, payload.symbol, uri)
    if payload.standard == "compressed":
        return _mint_compressed(chain, payer, owner, uri, payload)
    mint_keypair = derived_mint_keypair(payer, key)
    mint = mint_keypair.pubkey()
    signature = None
    if chain.account(mint) is None:
        instructions = _mint_instructions(chain, payer.pubkey(), mint, owner, uri, payload)
        try:
            signature = chain.send(instructions, [payer, mint_keypair])
        except AlreadyProcessed as landed:
            signature = str(landed)
        except PermanentError as refused:
            if refused.code == "program_missing" and payload.standard == "metaplex":
                raise PermanentError(
                    "standard 'metaplex' needs the Metaplex Token Metadata program "
                    f"({metaplex.TOKEN_METADATA_PROGRAM_ID}), which this ledger does not have "
                    "(the embedded ledger never has it): mint with standard 'token-2022' or "
                    "against a cluster that has it",
                    code="program_missing",
                ) from None
            raise
    holder = _adopt_existing(chain, mint, owner)
    if holder.owner != owner:
        raise PermanentError(
            f"ticket {mint} for this request is held by {holder.owner}, not the buyer {owner}",
            code="owner_mismatch",
        )
    return MintOutcome(
        mint=str(mint),
        owner=str(owner),
        token_account=str(holder.token_account),
        uri=uri,
        name=payload.name,
        symbol=payload.symbol,
        standard=payload.standard,
        signature=signature,
    )


def _mint_compressed(
    chain: Chain, payer: Keypair, owner: Pubkey, uri: str, payload: MintPayload
) -> MintOutcome:
    """A Bubblegum leaf owned by the buyer, with the metaplex standard's metadata (the payer
    its sole verified creator, royalty and an unverified collection from the request)."""
    minted = compressed.mint_compressed(
        chain,
        payer,
        owner,
        bubblegum.MetadataArgs(
            name=payload.name,
            symbol=payload.symbol,
            uri=uri,
            seller_fee_basis_points=payload.seller_fee_basis_points,
            creators=(metaplex.Creator(payer.pubkey(), verified=True, share=100),),
            collection=parse_address(payload.collection, "collection")
            if payload.collection
            else None,
        ),
    )
    return MintOutcome(
        mint=str(minted.asset_id),
        owner=str(owner),
        token_account="",  # a leaf of tree `minted.tree`, no token account
        uri=uri,
        name=payload.name,
        symbol=payload.symbol,
        standard=payload.standard,
        signature=minted.signature,
    )


def _mint_instructions(
    chain: Chain, payer: Pubkey, mint: Pubkey, owner: Pubkey, uri: str, payload: MintPayload
) -> list[Instruction]:
    """The request's transaction, once the payer is known to afford it."""
    if payload.standard == "metaplex":
        mint_rent = chain.rent_exempt_minimum(token2022.MINT_BASE_SIZE)
        other_rent = chain.rent_exempt_minimum(165) + chain.rent_exempt_minimum(
            metaplex.MAX_METADATA_LEN
        )
        require_funds(chain, payer, mint_rent + other_rent + FEE_HEADROOM)
        return metaplex_mint_instructions(
            payer=payer,
            mint=mint,
            owner=owner,
            name=payload.name,
            symbol=payload.symbol,
            uri=uri,
            seller_fee_basis_points=payload.seller_fee_basis_points,
            collection=parse_address(payload.collection, "collection")
            if payload.collection
            else None,
            mint_rent=mint_rent,
        )
    additional = ticket_attributes(payload)
    full_size = token2022.MINT_WITH_METADATA_POINTER_SIZE + token2022.token_metadata_size(
        payload.name, payload.symbol, uri, additional
    )
    mint_rent = chain.rent_exempt_minimum(full_size)
    ata_rent = chain.rent_exempt_minimum(TOKEN_2022_ACCOUNT_SIZE)
    require_funds(chain, payer, mint_rent + ata_rent + FEE_HEADROOM)
    return token2022_mint_instructions(
        payer=payer,
        mint=mint,
        owner=owner,
        name=payload.name,
        symbol=payload.symbol,
        uri=uri,
        additional=additional,
        mint_rent=mint_rent,
    )
