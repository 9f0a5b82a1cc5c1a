"""mint_job: mint a batch of ticket NFTs, each to its buyer's wallet and at most once, read
each holder back from the chain, then tell each buyer (e-mail) and the platform (webhook)."""

import dagster as dg

from queue_pipelines.failures import PermanentError
from queue_pipelines.intake.payloads import MintPayload
from queue_pipelines.jobs.batch import BatchConfig, Request, batch_job, run_batch
from queue_pipelines.notifications.events import NftDelivery, nft_notice
from resources import (
    EffectLedgerResource,
    MetadataStoreResource,
    NotifierResource,
    RedisResource,
    SolanaResource,
)


@dg.op(tags={"queue/effect": "solana.mint"})
def mint_tickets(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    redis: RedisResource,
    solana: SolanaResource,
    metadata_store: MetadataStoreResource,
    effect_ledger: EffectLedgerResource,
    notifier: NotifierResource,
) -> dg.Output[dict[str, int]]:
    # The Solana stack loads here, in mint runs only: other runs of this code location
    # (payments, refunds, notifications) never import it.
    from queue_pipelines.nft.holders import holder_of
    from queue_pipelines.nft.keys import parse_address
    from queue_pipelines.nft.minting import mint_ticket_once

    ledger, intake = effect_ledger.ledger(), redis.intake()
    chain, payer = solana.chain(), solana.payer()
    notices = notifier.for_run(
        context.run_id, ledger, resend=config.resend, dead_letter=intake.dead_letter_notice
    )

    def mint_and_tell(request: Request[MintPayload]) -> dict:
        payload = request.payload
        minted = mint_ticket_once(
            chain,
            payer,
            ledger,
            metadata_store.put,
            tenant_id=request.tenant_id,
            idempotency_key=request.idempotency_key,
            payload=payload,
            run_id=context.run_id,
        )
        # The buyer is told only once the chain says the buyer holds it. A compressed ticket
        # has no token account to read: its confirmed mintV1 made the buyer its leaf's owner.
        if minted.standard != "compressed":
            holder = holder_of(chain, parse_address(minted.mint, "mint address"))
            if holder is None or str(holder.owner) != minted.owner:
                raise PermanentError(
                    f"ticket {minted.mint} is held by {holder.owner if holder else 'nobody'}, "
                    f"not the buyer {minted.owner}",
                    code="wrong_holder",
                )
        summary = {
            "order_id": payload.order_id,
            "mint": minted.mint,
            "owner": minted.owner,
            "standard": minted.standard,
            "uri": minted.uri,
            "signature": minted.signature or "",
            "minted": "earlier" if minted.replayed else "now",
        }
        delivery = NftDelivery(
            tenant_id=request.tenant_id,
            idempotency_key=request.idempotency_key,
            order_id=payload.order_id,
            wallet=minted.owner,
            mint_address=minted.mint,
            event=payload.attributes.event,
            seat=payload.attributes.seat,
            buyer_email=str(payload.buyer_email) if payload.buyer_email else None,
            buyer_name=payload.buyer_name,
            signature=minted.signature,
        )
        notice = nft_notice(delivery, notifier.notification_settings.explorer_url_template)
        return {
            **summary,
            **notices.tell(notice, f"NFT {minted.mint} was delivered to {minted.owner}"),
        }

    return run_batch(context, config, intake=intake, handle=mint_and_tell)


mint_job = batch_job(
    "mint",
    mint_tickets,
    description="Mint a batch of one tenant's ticket NFTs (Token-2022 with on-chain metadata, "
    "Metaplex or compressed) to the buyers' wallets, check each holder on chain; then each "
    "buyer is e-mailed and the platform told by webhook.",
)
