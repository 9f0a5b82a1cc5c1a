"""Moving a ticket NFT to a new owner on resale, at most once per request, only for the
tenant it was minted for, and only out of a wallet this service holds the key to.

A transfer reads the holder, checks it and sends from it. Two transfers of one ticket at once
would both read the same holder, so they take turns: one after another in entry order within a
batch (the op's `turns_of`), and under a Redis lock per ticket across runs and workers
(`ticket_turns`), as refunds of one PaymentIntent do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import redis
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from spl.token import instructions as token_ix
from spl.token import models as token_models

from queue_pipelines.effects import act_again, act_once
from queue_pipelines.failures import PermanentError
from queue_pipelines.ledger import EffectLedger, effect_key
from queue_pipelines.nft import compressed
from queue_pipelines.nft.chain import AlreadyProcessed, Chain
from queue_pipelines.nft.holders import holder_of, holds, require_minted_for
from queue_pipelines.nft.keys import parse_address
from queue_pipelines.turns import Turns

log = logging.getLogger("queue_pipelines.nft")


def ticket_turns(client: redis.Redis, key_of: Callable[[str], str], **kwargs) -> Turns:
    """One transfer of a ticket at a time, across every run and worker (`key_of(mint)`). A
    turn is held for a holder read, one transaction's send and its confirmation (up to the
    blockhash's expiry, about a minute on a cluster) and a read back: 120 s at most."""
    return Turns(client, key_of, "transfer of ticket", "transfer_in_progress", **kwargs)


@dataclass(frozen=True)
class TransferOutcome:
    mint: str
    from_owner: str
    to_owner: str
    to_token_account: str
    signature: str | None  # None: nothing was sent (already held)
    # The new owner held the ticket already when this request came to it: nothing was sent,
    # and it is not a transfer (the metrics do not count it).
    already_held: bool = False
    replayed: bool = False

    @property
    def transferred(self) -> str:
        """What the request's outcome row says: `now` (moved by this attempt), `earlier`
        (moved by an earlier attempt of the request) or `already held` (nothing was sent; not
        a transfer, and the metrics do not count it)."""
        if self.already_held:
            return "already held"
        return "earlier" if self.replayed else "now"

    def recordable(self) -> dict[str, Any]:
        """What the ledger keeps: all but whether this attempt replayed it."""
        return {k: v for k, v in asdict(self).items() if k != "replayed"}


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
    locks: Turns | None,
    standard: str = "token-2022",
) -> TransferOutcome:
    """Move the ticket to `to_wallet`, signed by its current holder's custodial key.

    A token account's owner must sign a transfer out of it. The service signs only for
    wallets it holds keys to (`custodial`: the payer and SOLANA_CUSTODIAL_KEYPAIRS); a
    ticket in a self-custodied wallet can be moved only by its owner, so it is refused.
    Only a ticket this service minted for `tenant_id` is moved (require_minted_for).
    `locks` keeps other transfers of the ticket out meanwhile; None only where nothing else
    moves tickets (a test on a ledger of its own). A `compressed` ticket (`mint` is its asset
    id) is refused, before anything is claimed: compressed.refuse_transfer says why."""
    if standard == "compressed":
        raise compressed.refuse_transfer(chain, mint)
    require_minted_for(ledger, tenant_id, mint)
    key = effect_key("transfer", tenant_id, idempotency_key)
    with locks.holding(mint) if locks is not None else nullcontext():
        effect = act_once(
            ledger,
            key,
            "transfer",
            run_id,
            lambda: _transfer(
                chain, payer, custodial, mint, to_wallet, expected_owner
            ).recordable(),
            # `_transfer` reads the holder first: a ticket an earlier attempt moved is found
            # there (and reported already held: without a signature, the chain cannot tell
            # this request's landed attempt from a holder who had it before).
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
        # Nothing to send: the new owner has it (before the seller check, so that a request
        # whose earlier attempt landed unrecorded does not fail on its own effect).
        return TransferOutcome(
            str(mint),
            str(to_owner),
            str(to_owner),
            str(holder.token_account),
            None,
            already_held=True,
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
