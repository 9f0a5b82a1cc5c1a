"""nft_transfer_job: move a batch of one tenant's tickets to their new owners after resales,
each at most once, and only tickets this service minted for that tenant; each new holder is
read back from the chain. One ticket's transfers take turns: in the batch's order within a
run, under a lock per ticket across runs (docs/nft.md)."""

import dagster as dg

from queue_pipelines.intake.payloads import TransferPayload
from queue_pipelines.jobs.batch import BatchConfig, Request, batch_job, run_batch
from resources import EffectLedgerResource, RedisResource, SolanaResource


@dg.op(tags={"queue/effect": "solana.transfer"})
def transfer_tickets(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    redis: RedisResource,
    solana: SolanaResource,
    effect_ledger: EffectLedgerResource,
) -> dg.Output[dict[str, int]]:
    # The Solana stack loads in transfer runs only (as in mint runs).
    from queue_pipelines.nft.transfers import ticket_turns, transfer_ticket_once

    ledger = effect_ledger.ledger()
    chain, payer, custodial = solana.chain(), solana.payer(), solana.custodial()
    locks = ticket_turns(redis.client(), redis.redis_keys().transfer_lock)

    def transfer(request: Request[TransferPayload]) -> dict:
        payload = request.payload
        # Checks the tenant's claim on the ticket, and that the new owner holds it after.
        moved = transfer_ticket_once(
            chain,
            payer,
            custodial,
            ledger,
            tenant_id=request.tenant_id,
            idempotency_key=request.idempotency_key,
            mint=payload.mint,
            to_wallet=payload.to_wallet,
            expected_owner=payload.from_wallet,
            run_id=context.run_id,
            locks=locks,
            standard=payload.standard,
        )
        return {
            "order_id": payload.order_id or "",
            "mint": moved.mint,
            "from": moved.from_owner,
            "to": moved.to_owner,
            "signature": moved.signature or "",
            "transferred": moved.transferred,
        }

    return run_batch(
        context,
        config,
        intake=redis.intake(),
        handle=transfer,
        turns_of=lambda request: [request.payload.mint],
    )


nft_transfer_job = batch_job(
    "transfer",
    transfer_tickets,
    description="Transfer a batch of one tenant's ticket NFTs, each from the custodial wallet "
    "that holds it to its new owner, and check each new holder on chain.",
)
