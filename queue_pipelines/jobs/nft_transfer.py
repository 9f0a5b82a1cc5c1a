"""nft_transfer_job: move a ticket to its new owner after a resale, at most once."""

import dagster as dg
from pydantic import Field

from queue_pipelines import tags
from queue_pipelines.jobs.common import TRANSIENT_RETRY_POLICY, classified_failures
from resources import EffectLedgerResource, SolanaResource


class TransferConfig(dg.Config):
    tenant_id: str
    idempotency_key: str = Field(description="One transfer per key, however often it runs.")
    mint: str = Field(description="The ticket's mint address.")
    to_wallet: str = Field(description="The buyer's wallet, base58.")
    from_wallet: str | None = Field(
        default=None, description="The seller; the transfer is refused if someone else holds it."
    )


@dg.op(retry_policy=TRANSIENT_RETRY_POLICY, tags={"queue/effect": "solana.transfer"})
def transfer_ticket(
    context: dg.OpExecutionContext,
    config: TransferConfig,
    solana: SolanaResource,
    effect_ledger: EffectLedgerResource,
) -> dg.Output:
    # The Solana stack loads in transfer runs only (as in mint runs).
    from queue_pipelines.nft.tickets import transfer_ticket_once

    with classified_failures():
        outcome = transfer_ticket_once(
            solana.chain(),
            solana.payer(),
            solana.custodial(),
            effect_ledger.ledger(),
            tenant_id=config.tenant_id,
            idempotency_key=config.idempotency_key,
            mint=config.mint,
            to_wallet=config.to_wallet,
            expected_owner=config.from_wallet,
            run_id=context.run_id,
        )
    return dg.Output(
        outcome,
        metadata={
            "mint": outcome.mint,
            "from": outcome.from_owner,
            "to": outcome.to_owner,
            "signature": outcome.signature or "",
            "replayed": outcome.replayed,
        },
    )


@dg.job(
    executor_def=dg.in_process_executor,
    description="Transfer a ticket NFT from a custodial wallet to its new owner.",
    tags={tags.JOB_TYPE: "nft_transfer"},
)
def nft_transfer_job():
    transfer_ticket()
