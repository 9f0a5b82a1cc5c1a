"""Ticket NFTs: metadata, minting, ownership and transfers, each effect at most once.

At most once is kept two ways (docs/nft.md):
1. the effect ledger, as for charges: claim `mint:tenant:key` before, record right after;
2. a deterministic mint address per request (`derived_mint_keypair`): every attempt for the
   same request creates the same mint account, in one atomic transaction, so a second
   attempt that reaches the chain cannot make a second NFT, and an attempt that finds the
   account already minted adopts it instead of minting again. This closes the gap the
   ledger alone leaves (a worker killed after the transaction landed, before recording it)
   without the Stripe-style time window.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from spl.token import instructions as token_ix
from spl.token import models as token_models
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID

from queue_pipelines.effects import act_again, act_once
from queue_pipelines.failures import PermanentError
from queue_pipelines.intake.payloads import MintPayload
from queue_pipelines.ledger import DONE, EffectLedger, effect_key
from queue_pipelines.nft import metaplex, token2022
from queue_pipelines.nft.chain import AlreadyProcessed, Chain, require_funds
from queue_pipelines.nft.keys import derived_mint_keypair, parse_address

# Metaplex's limits (MAX_NAME_LENGTH, MAX_SYMBOL_LENGTH, MAX_URI_LENGTH), which wallets and
# marketplaces assume for Token-2022 metadata too; the intake schema enforces the same.
MAX_NAME_LENGTH, MAX_SYMBOL_LENGTH, MAX_URI_LENGTH = 32, 10, 200
# Signature fees of one mint transaction (2 signatures at 5000 lamports) with headroom.
FEE_HEADROOM = 50_000
TOKEN_2022_ACCOUNT_SIZE = 170  # base 165 + account type + ImmutableOwner (an ATA's extension)
# Ledger rows mint address -> the tenant it was minted for (written with the mint's record).
MINT_ADDRESS_KIND = "mint-address"


def ticket_attributes(payload: MintPayload) -> dict[str, str]:
    attributes = payload.attributes
    return {k: str(getattr(attributes, k)) for k in ("event", "venue", "seat", "date")}


def ticket_metadata(payload: MintPayload) -> dict[str, Any]:
    """The off-chain JSON, in the Metaplex JSON standard's fields."""
    document: dict[str, Any] = {
        "name": payload.name,
        "symbol": payload.symbol,
        "description": payload.description,
        "attributes": [
            {"trait_type": k, "value": v} for k, v in ticket_attributes(payload).items()
        ],
        "properties": {"category": "image", "files": []},
    }
    if payload.image:
        document["image"] = payload.image
        document["properties"]["files"] = [
            {"uri": payload.image, "type": _image_type(payload.image)}
        ]
    return document


def _image_type(uri: str) -> str:
    suffix = uri.rsplit(".", 1)[-1].lower()
    return {
        "png": "image/png",
        "jpg": "image/jpeg",
        "jpeg": "image/jpeg",
        "gif": "image/gif",
        "svg": "image/svg+xml",
        "webp": "image/webp",
    }.get(suffix, "image/png")


def metadata_name(key: str) -> str:
    """The stored document's name: stable per request, free of tenant data."""
    return hashlib.sha256(key.encode()).hexdigest()[:40] + ".json"


def check_onchain_fields(name: str, symbol: str, uri: str) -> None:
    for what, value, limit in (
        ("name", name, MAX_NAME_LENGTH),
        ("symbol", symbol, MAX_SYMBOL_LENGTH),
        ("uri", uri, MAX_URI_LENGTH),
    ):
        if not value.strip():
            raise PermanentError(f"the ticket's {what} is empty", code="invalid_metadata")
        if len(value.encode()) > limit:
            raise PermanentError(
                f"the ticket's {what} is {len(value.encode())} bytes, over the standard's "
                f"limit of {limit}",
                code="invalid_metadata",
            )


@dataclass(frozen=True)
class Holder:
    owner: Pubkey
    token_account: Pubkey
    token_program: Pubkey


def holder_of(chain: Chain, mint: Pubkey) -> Holder | None:
    """Who holds the (supply 1) token of `mint`, read from the chain."""
    account = chain.account(mint)
    if account is None or account.owner not in (TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID):
        return None
    for found in chain.token_accounts_for_mint(account.owner, mint):
        state = token2022.decode_token_account(found.data)
        if state.amount > 0:
            return Holder(state.owner, found.address, account.owner)
    return None


def holds(chain: Chain, mint: Pubkey, wallet: Pubkey) -> bool:
    holder = holder_of(chain, mint)
    return holder is not None and holder.owner == wallet


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
        lambda: _recordable(_mint(chain, payer, store_metadata, key, payload)),
        # The mint's address derives from the key: `_mint` finds an earlier attempt's ticket
        # on the chain and adopts it. A refusal (PermanentError) came before or from the
        # chain, where the transaction is atomic: it did not land.
        in_doubt=act_again,
        index_of=lambda result: (
            mint_address_key(result["mint"]),
            MINT_ADDRESS_KIND,
            {"tenant_id": tenant_id, "effect_key": key},
        ),
    )
    return MintOutcome(**effect.result, replayed=effect.replayed)


def _recordable(outcome: MintOutcome | TransferOutcome) -> dict[str, Any]:
    """What the ledger keeps of an outcome: all but whether this attempt replayed it."""
    return {k: v for k, v in asdict(outcome).items() if k != "replayed"}


def mint_address_key(mint: str) -> str:
    """The ledger row that says which tenant's request minted `mint`."""
    return f"{MINT_ADDRESS_KIND}:{mint}"


def minted_for(ledger: EffectLedger, mint: str) -> str | None:
    """The tenant whose request this service minted `mint` for; None if it minted no such."""
    row = ledger.get(mint_address_key(mint))
    if row is not None and row["status"] == DONE:
        return json.loads(row["result"])["tenant_id"]
    return None


def require_minted_for(ledger: EffectLedger, tenant_id: str, mint: str) -> None:
    """A tenant moves only tickets this service minted for it (PermanentError otherwise)."""
    if minted_for(ledger, mint) == tenant_id:
        return
    # Mints recorded before the address rows existed: found by a scan of the tenant's mints.
    if ledger.find_done("mint", effect_key("mint", tenant_id, ""), "mint", mint):
        return
    # Whose ticket it is (if anyone's) stays unsaid: another tenant's business.
    raise PermanentError(
        f"ticket {mint} was not minted by this service for tenant {tenant_id}: a tenant can "
        "transfer only its own tickets",
        code="not_tenant_ticket",
    )


def _mint(chain: Chain, payer: Keypair, store_metadata, key: str, payload: MintPayload):
    owner = parse_address(payload.wallet, "buyer wallet")
    uri = payload.uri or store_metadata(metadata_name(key), ticket_metadata(payload))
    check_onchain_fields(payload.name, payload.symbol, uri)
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


@dataclass(frozen=True)
class TransferOutcome:
    mint: str
    from_owner: str
    to_owner: str
    to_token_account: str
    signature: str | None
    replayed: bool = False


def transfer_ticket_once(
    chain: Chain,
    payer: Keypair,
    custodial: dict[Pubkey, Keypair],
    ledger: EffectLedger,
    *,
    tenant_id: str,
    idempotency_key: str,
    mint: str,
    to_wallet: str,
    expected_owner: str | None,
    run_id: str,
) -> TransferOutcome:
    """Move the ticket to `to_wallet`, signed by its current holder's custodial key.

    A token account's owner must sign a transfer out of it. The service signs only for
    wallets it holds keys to (`custodial`: the payer and SOLANA_CUSTODIAL_KEYPAIRS); a
    ticket in a self-custodied wallet can be moved only by its owner, so it is refused.
    Only a ticket this service minted for `tenant_id` is moved (require_minted_for)."""
    require_minted_for(ledger, tenant_id, mint)
    key = effect_key("transfer", tenant_id, idempotency_key)
    effect = act_once(
        ledger,
        key,
        "transfer",
        run_id,
        lambda: _recordable(_transfer(chain, payer, custodial, mint, to_wallet, expected_owner)),
        # `_transfer` reads the holder first: a ticket an earlier attempt moved is found there.
        in_doubt=act_again,
    )
    return TransferOutcome(**effect.result, replayed=effect.replayed)


def _transfer(chain, payer, custodial, mint_address, to_wallet, expected_owner):
    mint = parse_address(mint_address, "mint address")
    to_owner = parse_address(to_wallet, "new owner wallet")
    holder = holder_of(chain, mint)
    if holder is None:
        raise PermanentError(f"no wallet holds a token of mint {mint}", code="not_held")
    if holder.owner == to_owner:
        # An earlier attempt moved it (or it was there already): nothing left to do.
        return TransferOutcome(
            str(mint), str(to_owner), str(to_owner), str(holder.token_account), None
        )
    if expected_owner is not None and str(holder.owner) != expected_owner:
        raise PermanentError(
            f"ticket {mint} is held by {holder.owner}, not the seller {expected_owner}",
            code="owner_mismatch",
        )
    signer = custodial.get(holder.owner)
    if signer is None:
        raise PermanentError(
            f"transferring ticket {mint} needs the signature of its holder {holder.owner}, "
            "a wallet this service holds no key for (it signs only for custodial wallets): "
            "the holder must transfer it themselves",
            code="cannot_sign",
        )
    destination = token_ix.get_associated_token_address(to_owner, mint, holder.token_program)
    instructions = [
        token_ix.create_idempotent_associated_token_account(
            payer.pubkey(), to_owner, mint, holder.token_program
        ),
        token_ix.transfer_checked(
            token_models.TransferCheckedParams(
                program_id=holder.token_program,
                source=holder.token_account,
                mint=mint,
                dest=destination,
                owner=holder.owner,
                amount=1,
                decimals=0,
            )
        ),
    ]
    signers = [payer] if signer.pubkey() == payer.pubkey() else [payer, signer]
    try:
        signature = chain.send(instructions, signers)
    except AlreadyProcessed as landed:
        signature = str(landed)
    if not holds(chain, mint, to_owner):
        raise PermanentError(f"after the transfer, {to_owner} does not hold ticket {mint}")
    return TransferOutcome(str(mint), str(holder.owner), str(to_owner), str(destination), signature)
