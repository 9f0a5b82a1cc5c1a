"""The code location: assembly only. One intake sensor and one job per registered job type
(queue_pipelines/intake/registry.py), plus the jobs launched by hand or on a schedule; the
resources and batch sizes come from queue_pipelines/deployment.py.
"""

from __future__ import annotations

import dagster as dg

from queue_pipelines.deployment import all_resources, batch_policy, sandbox_tags
from queue_pipelines.intake.registry import JOB_TYPE_SPECS
from queue_pipelines.jobs.batch import job_for
from queue_pipelines.jobs.wallet_balance import build_wallet_balance_schedule, wallet_balance_job
from queue_pipelines.logs import configure_logging
from queue_pipelines.settings import load
from sensors.backlog import backlog_assets, build_backlog_sensor
from sensors.intake import build_intake_sensor


def build_definitions() -> dg.Definitions:
    configure_logging()  # QP_LOG_FORMAT=json: one JSON object per line
    config = load()
    config.refuse_sandbox_secrets()  # production mode with a public secret: no start
    extra_tags = sandbox_tags()
    intake_jobs = {spec.name: job_for(spec.name) for spec in JOB_TYPE_SPECS}
    return dg.Definitions(
        jobs=[*intake_jobs.values(), wallet_balance_job],
        assets=backlog_assets(),
        schedules=[
            build_wallet_balance_schedule(
                config.solana_min_balance_sol,
                # The embedded ledger's payer is funded by the sandbox: no check runs there
                # until an operator starts the schedule (or launches the job).
                running=not config.solana_is_embedded,
            )
        ],
        sensors=[
            *(
                build_intake_sensor(
                    spec.name,
                    intake_jobs[spec.name],
                    policy=batch_policy(spec),
                    extra_tags=extra_tags,
                )
                for spec in JOB_TYPE_SPECS
            ),
            build_backlog_sensor(),
        ],
        resources=all_resources(),
    )


defs = build_definitions()
