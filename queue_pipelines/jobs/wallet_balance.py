"""The payer's balance, checked on a schedule, so the minting wallet never runs dry unnoticed:
the balance is recorded (the `solana_wallet_balance_sol` metric reads it), and below the
threshold the operators are alerted and the run fails."""

import dagster as dg
from pydantic import Field

from queue_pipelines import tags
from queue_pipelines.jobs.common import classified_failures
from resources import NotifierResource, SolanaResource

LAMPORTS_PER_SOL = 1_000_000_000


class BalanceCheckConfig(dg.Config):
    threshold_sol: float = Field(default=1.0, description="Alert below this many SOL.")


@dg.op(retry_policy=dg.RetryPolicy(max_retries=2, delay=5))
def read_payer_balance(context: dg.OpExecutionContext, solana: SolanaResource) -> dg.Output[int]:
    with classified_failures():
        payer = solana.payer().pubkey()
        lamports = solana.chain().balance(payer)
    context.log.info(f"payer wallet {payer} holds {lamports / LAMPORTS_PER_SOL:.9f} SOL")
    # `wallet` and `wallet_balance_sol` are the metrics' convention (docs/metrics.md).
    return dg.Output(
        lamports,
        metadata={
            "wallet": str(payer),
            "wallet_balance_sol": lamports / LAMPORTS_PER_SOL,
            "balance_lamports": lamports,
        },
    )


@dg.op
def alert_on_low_balance(
    context: dg.OpExecutionContext,
    config: BalanceCheckConfig,
    lamports: int,
    solana: SolanaResource,
    notifier: NotifierResource,
) -> None:
    sol = lamports / LAMPORTS_PER_SOL
    if sol >= config.threshold_sol:
        return
    payer = solana.payer().pubkey()
    message = (
        f"payer wallet {payer} holds {sol:.9f} SOL, below the {config.threshold_sol} SOL "
        "threshold: fund it before mints start failing"
    )
    context.log.error(message)
    notifier.alert_operators(
        summary="Solana payer wallet low",
        details=message,
        run_id=context.run_id,
        tenant_id="operators",
    )
    raise dg.Failure(
        description=message,
        metadata={"wallet": str(payer), "threshold_sol": config.threshold_sol},
        allow_retries=False,
    )


@dg.job(
    description="Read the payer wallet's balance; alert and fail below the threshold.",
    tags={tags.JOB_TYPE: "wallet_balance"},
)
def wallet_balance_job():
    alert_on_low_balance(read_payer_balance())


def build_wallet_balance_schedule(
    threshold_sol: float, cron: str = "*/15 * * * *", *, running: bool = True
):
    """Every 15 minutes. A schedule that runs also runs at start-up when the stack was down
    over a quarter hour (Dagster launches the latest missed tick), so it runs only where a
    real payer is at stake (`running`); elsewhere an operator starts it in the UI."""
    return dg.ScheduleDefinition(
        name="wallet_balance_schedule",
        job=wallet_balance_job,
        cron_schedule=cron,
        run_config={"ops": {"alert_on_low_balance": {"config": {"threshold_sol": threshold_sol}}}},
        default_status=dg.DefaultScheduleStatus.RUNNING
        if running
        else dg.DefaultScheduleStatus.STOPPED,
        description=f"Every 15 minutes: alert when the payer holds under {threshold_sol} SOL.",
    )
