"""The payer's balance, checked on a schedule: a failing run and an error line below the
threshold, so the minting wallet never runs dry unnoticed."""

import dagster as dg
from pydantic import Field

from queue_pipelines.jobs.common import classified_failures
from resources import SolanaResource

LAMPORTS_PER_SOL = 1_000_000_000


class BalanceCheckConfig(dg.Config):
    threshold_sol: float = Field(default=1.0, description="Alert below this many SOL.")


@dg.op(retry_policy=dg.RetryPolicy(max_retries=2, delay=5))
def check_payer_balance(
    context: dg.OpExecutionContext, config: BalanceCheckConfig, solana: SolanaResource
) -> dg.Output[int]:
    with classified_failures():
        payer = solana.payer().pubkey()
        lamports = solana.chain().balance(payer)
    sol = lamports / LAMPORTS_PER_SOL
    metadata = {
        "payer": str(payer),
        "balance_lamports": lamports,
        "balance_sol": sol,
        "threshold_sol": config.threshold_sol,
    }
    if sol < config.threshold_sol:
        message = (
            f"payer wallet {payer} holds {sol:.9f} SOL, below the {config.threshold_sol} SOL "
            "threshold: fund it before mints start failing"
        )
        context.log.error(message)
        raise dg.Failure(description=message, metadata=metadata, allow_retries=False)
    context.log.info(f"payer wallet {payer} holds {sol:.9f} SOL")
    return dg.Output(lamports, metadata=metadata)


@dg.job(description="Read the payer wallet's balance; fail below the threshold.")
def wallet_balance_job():
    check_payer_balance()


def build_wallet_balance_schedule(threshold_sol: float, cron: str = "*/15 * * * *"):
    return dg.ScheduleDefinition(
        name="wallet_balance_schedule",
        job=wallet_balance_job,
        cron_schedule=cron,
        run_config={"ops": {"check_payer_balance": {"config": {"threshold_sol": threshold_sol}}}},
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Every 15 minutes: alert when the payer holds under {threshold_sol} SOL.",
    )
