"""Who holds a ticket (read from the chain), and which tenant a ticket belongs to (read from
the effect ledger's mint address rows)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from solders.pubkey import Pubkey
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID

from queue_pipelines.failures import PermanentError
from queue_pipelines.ledger import DONE, EffectLedger, effect_key
from queue_pipelines.nft import token2022
from queue_pipelines.nft.chain import Chain

# Ledger rows mint address -> the tenant it was minted for (written with the mint's record).
MINT_ADDRESS_KIND = "mint-address"


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
