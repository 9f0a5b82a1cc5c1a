"""Intake sensors: turn Redis Stream entries into micro-batch runs, one sensor per job type.

The tick itself is plain code (queue_pipelines/intake/dispatch.py); this is its Dagster shell:
the run lookup, the run requests and the cursor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg

from queue_pipelines import tags
from queue_pipelines.intake.batches import Batch, BatchPolicy
from queue_pipelines.intake.dispatch import TickCursor, run_intake_ticks
from queue_pipelines.intake.settling import BatchRun, RunState
from queue_pipelines.jobs.batch import batch_run_config
from resources import RedisResource
from sensors.run_failures import describe_run_failure

# How long an evaluation with nothing to launch keeps listening for new requests. The daemon
# starts one every 5 s and skips a sensor whose last evaluation has not returned, so the
# window ends early enough for the evaluation's own overhead (0.25-0.65 s measured on an idle
# 2-core machine: the gRPC call, the run lookup, the tick's record) to fit before the next
# loop. A request that comes between windows waits for the next evaluation (~1 s here, 2 s at
# 3 s of listening; docs/performance.md). run_intake_ticks says more.
LISTEN_SECONDS = 4.0
# What the sensor page shows as the interval. The daemon's loop comes every 5 s and skips a
# sensor whose last tick started under minimum_interval_seconds ago; that tick started a few
# milliseconds into the previous loop, so 5 would skip every other loop (10 s apart). 4 is
# the nearest to the real 5 s that never skips one.
MINIMUM_INTERVAL_SECONDS = 4
# Entries one tick reads (fresh, and as many stale ones). The next evaluation is 5 s away, so
# a burst larger than this waits that long for its later runs: 2,000 keeps a 2,000-request
# burst in one tick (~0.3 s of the tick's own work per 1,000; docs/performance.md).
MAX_ENTRIES_PER_TICK = 2000

_IN_PROGRESS = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}


def lookup_batch_runs(
    instance: dg.DagsterInstance, batch_keys: Sequence[str]
) -> dict[str, BatchRun]:
    """The state of each batch's runs. A batch can have several (Dagster's run retries, an
    operator's re-execution): while any is live, or one will be retried, the batch is live.
    A failed run keeps `will_retry=true` after its retry is launched (the retry, which carries
    the batch's tags, is named in `auto_retry_run_id`), so from then on the retry decides."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={tags.BATCH: list(batch_keys)}))
    found: dict[str, BatchRun] = {}
    for run in runs:  # newest first
        key = run.tags[tags.BATCH]
        retry_pending = (
            run.tags.get(tags.WILL_RETRY) == "true" and tags.AUTO_RETRY_RUN_ID not in run.tags
        )
        live = run.status in _IN_PROGRESS or retry_pending
        if live:
            found[key] = BatchRun(RunState.IN_PROGRESS, run.run_id)
        elif key not in found:
            failure = ""
            if run.status == dg.DagsterRunStatus.CANCELED:
                failure = f"run {run.run_id} was canceled"
            elif run.status == dg.DagsterRunStatus.FAILURE:
                failure = describe_run_failure(instance, run.run_id)
            started = run.status == dg.DagsterRunStatus.SUCCESS or bool(
                instance.get_records_for_run(
                    run.run_id, of_type=dg.DagsterEventType.STEP_START, limit=1
                ).records
            )
            found[key] = BatchRun(RunState.ENDED, run.run_id, failure, started)
    return found


def run_request_for(
    batch: Batch, job: dg.JobDefinition, extra_tags: Mapping[str, str]
) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=batch.key,
        run_config=batch_run_config(batch, job),
        tags={
            **extra_tags,
            tags.JOB_TYPE: batch.job_type,
            tags.TENANT: batch.tenant_id,
            tags.BATCH: batch.key,
            tags.PRIORITY: str(batch.priority),
            # One request: say which, so the Runs page can be filtered by it.
            **({tags.REQUEST_KEY: batch.items[0].request_key} if len(batch.items) == 1 else {}),
        },
    )


def build_intake_sensor(
    job_type: str,
    job: dg.JobDefinition,
    *,
    policy: BatchPolicy,
    extra_tags: Mapping[str, str] | None = None,
    max_entries_per_tick: int = MAX_ENTRIES_PER_TICK,
    reclaim_after_seconds: float = 60,
    minimum_interval_seconds: int = MINIMUM_INTERVAL_SECONDS,
    listen_seconds: float = LISTEN_SECONDS,
) -> dg.SensorDefinition:
    """A sensor reading the `job_type` stream and requesting micro-batch runs of `job`."""

    @dg.sensor(
        name=f"{job_type}_intake_sensor",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Every 5 s, reads the {job_type} intake stream (at most {max_entries_per_tick} "
            "entries a tick, "
            f"plus entries pending over {reclaim_after_seconds:.0f} s), settles the requests of "
            f"{job.name} runs that ended, and requests one run per batch of up to "
            f"{policy.size} requests of one tenant; dead-letters entries that do not validate."
        ),
    )
    def _intake_sensor(context: dg.SensorEvaluationContext, redis: RedisResource):
        outcome = run_intake_ticks(
            redis.intake(),
            job_type,
            TickCursor.parse(context.cursor),
            lambda keys: lookup_batch_runs(context.instance, keys),
            policy=policy,
            max_entries=max_entries_per_tick,
            reclaim_after_seconds=reclaim_after_seconds,
            listen_seconds=listen_seconds,
        )
        for what, reason in outcome.dead_lettered:
            context.log.warning(f"dead-lettered {job_type} {what}: {reason}")
        if not outcome.idle:  # a tick with nothing to do says so only as its skip reason
            context.log.info(f"{job_type} intake: {outcome.summary()}")
        run_requests = [run_request_for(batch, job, extra_tags or {}) for batch in outcome.launches]
        return dg.SensorResult(
            run_requests=run_requests,
            cursor=outcome.cursor.dump(),
            skip_reason=None
            if run_requests
            else dg.SkipReason(f"no new {job_type} requests ({outcome.summary()})"),
        )

    return _intake_sensor
