"""Intake sensors: turn Redis Stream entries into runs, one sensor per job type."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg

from queue_pipelines import tags
from queue_pipelines.intake.dispatch import (
    Launch,
    RequestRuns,
    RunState,
    TickCursor,
    run_intake_tick,
)
from queue_pipelines.intake.schema import Envelope
from resources import RedisResource
from sensors.run_status import describe_run_failure

_IN_PROGRESS = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}


_RANK = {RunState.SUCCEEDED: 2, RunState.IN_PROGRESS: 1, RunState.FAILED: 0}


def lookup_request_runs(
    instance: dg.DagsterInstance, job_type: str, request_keys: Sequence[str]
) -> dict[str, RequestRuns]:
    """The state of the runs each request already has. A request can have several runs (an
    operator re-executed it): any success settles it; else a live run means wait."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={tags.JOB_TYPE: job_type, tags.REQUEST_KEY: list(request_keys)})
    )
    found: dict[str, RequestRuns] = {}
    for run in runs:  # newest first
        key = run.tags[tags.REQUEST_KEY]
        # A failed notification after a charge that stands settles the request like a success.
        if run.status == dg.DagsterRunStatus.SUCCESS or tags.NOTIFICATION_FAILED in run.tags:
            state = RunState.SUCCEEDED
        elif run.status in _IN_PROGRESS:
            state = RunState.IN_PROGRESS
        else:
            state = RunState.FAILED
        known = found.get(key)
        if known is None or _RANK[state] > _RANK[known.state]:
            found[key] = RequestRuns(state, run.run_id)
    return {
        key: RequestRuns(runs.state, runs.run_id, describe_run_failure(instance, runs.run_id))
        if runs.state is RunState.FAILED
        else runs
        for key, runs in found.items()
    }


def run_request_for(
    launch: Launch,
    extra_tags: Mapping[str, str],
    run_config_for: Callable[[Envelope], dict[str, Any]],
) -> dg.RunRequest:
    envelope = launch.envelope
    return dg.RunRequest(
        run_key=envelope.request_key,
        run_config=run_config_for(envelope),
        tags={
            **extra_tags,
            tags.JOB_TYPE: envelope.type,
            tags.TENANT: envelope.tenant_id,
            tags.IDEMPOTENCY_KEY: envelope.idempotency_key,
            tags.REQUEST_KEY: envelope.request_key,
            tags.ENTRY_ID: launch.entry_ids[0],
            tags.PRIORITY: str(envelope.priority),
        },
    )


def build_intake_sensor(
    job_type: str,
    job: dg.JobDefinition,
    run_config_for: Callable[[Envelope], dict[str, Any]],
    *,
    extra_tags: Mapping[str, str] | None = None,
    max_entries_per_tick: int = 200,
    reclaim_after_seconds: float = 300,
    minimum_interval_seconds: int = 5,
) -> dg.SensorDefinition:
    """A sensor reading the `job_type` stream and requesting runs of `job`."""

    @dg.sensor(
        name=f"{job_type}_intake_sensor",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Reads the {job_type} intake stream (at most {max_entries_per_tick} entries a tick, "
            f"plus entries pending over {reclaim_after_seconds:.0f} s) and requests one "
            f"{job.name} run per request; dead-letters entries that do not validate."
        ),
    )
    def _intake_sensor(context: dg.SensorEvaluationContext, redis: RedisResource):
        outcome = run_intake_tick(
            redis.intake(),
            job_type,
            TickCursor.parse(context.cursor),
            lambda keys: lookup_request_runs(context.instance, job_type, keys),
            max_entries=max_entries_per_tick,
            reclaim_after_seconds=reclaim_after_seconds,
        )
        for entry_id, reason in outcome.dead_lettered:
            context.log.warning(f"dead-lettered {job_type} entry {entry_id}: {reason}")
        if outcome.read:
            context.log.info(f"{job_type} intake: {outcome.summary()}")
        run_requests = [
            run_request_for(launch, extra_tags or {}, run_config_for) for launch in outcome.launches
        ]
        return dg.SensorResult(
            run_requests=run_requests,
            cursor=outcome.cursor.dump(),
            skip_reason=None
            if run_requests
            else dg.SkipReason(f"no new {job_type} requests ({outcome.summary()})"),
        )

    return _intake_sensor
