"""mint_job: a ticket NFT to the buyer's wallet, at most once per request; then check it."""

import dagster as dg

from queue_pipelines import tags
from queue_pipelines.intake.schema import Envelope, MintPayload
from queue_pipelines.jobs.common import (
    TRANSIENT_RETRY_POLICY,
    IntakeRequestConfig,
    classified_failures,
    request_run_config,
)
from queue_pipelines.jobs.notification import (
    email_nft_delivered,
    request_of,
    webhook_nft_delivered,
)
from queue_pipelines.nft.keys import parse_address
from queue_pipelines.nft.tickets import MintOutcome, holder_of, mint_ticket_once
from queue_pipelines.notifications.events import NftDelivery
from resources import EffectLedgerResource, MetadataStoreResource, SolanaResource


@dg.op(retry_policy=TRANSIENT_RETRY_POLICY, tags={"queue/effect": "solana.mint"})
def mint_ticket(
    context: dg.OpExecutionContext,
    config: IntakeRequestConfig,
    solana: SolanaResource,
    metadata_store: MetadataStoreResource,
    effect_ledger: EffectLedgerResource,
) -> dg.Output[MintOutcome]:
    payload = config.parsed(MintPayload)
    with classified_failures():
        outcome = mint_ticket_once(
            solana.chain(),
            solana.payer(),
            effect_ledger.ledger(),
            metadata_store.put,
            tenant_id=config.tenant_id,
            idempotency_key=config.idempotency_key,
            payload=payload,
            run_id=context.run_id,
        )
    if outcome.replayed:
        context.log.info(f"ticket {outcome.mint} was minted by an earlier attempt; not again")
    return dg.Output(
        outcome,
        metadata={
            "mint": outcome.mint,
            "owner": outcome.owner,
            "token_account": outcome.token_account,
            "uri": dg.MetadataValue.url(outcome.uri),
            "signature": outcome.signature or "",
            "standard": outcome.standard,
            "order_id": payload.order_id,
            "replayed": outcome.replayed,
            "embedded_ledger": solana.embedded,
        },
    )


@dg.op(retry_policy=TRANSIENT_RETRY_POLICY)
def verify_ticket_owner(
    context: dg.OpExecutionContext, minted: MintOutcome, solana: SolanaResource
) -> dg.Output[NftDelivery]:
    """Read the holder back from the chain: the buyer is told only once it is the buyer."""
    with classified_failures():
        holder = holder_of(solana.chain(), parse_address(minted.mint, "mint address"))
    if holder is None or str(holder.owner) != minted.owner:
        raise dg.Failure(
            description=f"ticket {minted.mint} is held by {holder.owner if holder else 'nobody'}, "
            f"not the buyer {minted.owner}",
            allow_retries=False,
        )
    context.log.info(f"ticket {minted.mint} is held by {holder.owner}")
    request = request_of(context, "mint_ticket")
    payload = request.parsed(MintPayload)
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
    return dg.Output(delivery, metadata={"holder": str(holder.owner)})


@dg.job(
    executor_def=dg.in_process_executor,
    description="Mint a ticket NFT (Token-2022 with on-chain metadata) to the buyer's wallet; "
    "then the buyer is e-mailed and the platform told by webhook.",
    tags={tags.JOB_TYPE: "mint"},
)
def mint_job():
    delivered = verify_ticket_owner(mint_ticket())
    email_nft_delivered(delivered)
    webhook_nft_delivered(delivered)


def mint_run_config(envelope: Envelope) -> dict:
    return request_run_config("mint_ticket", envelope)
