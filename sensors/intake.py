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
from queue_pipelines.intake.schema import Envelope, RefundPayload
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
    found: dict[str, tuple[RunState, dg.DagsterRun]] = {}
    for run in runs:  # newest first
        key = run.tags[tags.REQUEST_KEY]
        # A failed notification after a charge that stands settles the request like a success.
        if run.status == dg.DagsterRunStatus.SUCCESS or tags.NOTIFICATION_FAILED in run.tags:
            state = RunState.SUCCEEDED
        elif run.status in _IN_PROGRESS or run.tags.get(tags.WILL_RETRY) == "true":
            state = RunState.IN_PROGRESS
        else:
            state = RunState.FAILED
        if key not in found or _RANK[state] > _RANK[found[key][0]]:
            found[key] = (state, run)
    return {key: _request_runs(instance, state, run) for key, (state, run) in found.items()}


def _request_runs(instance: dg.DagsterInstance, state: RunState, run: dg.DagsterRun) -> RequestRuns:
    if state is not RunState.FAILED:
        return RequestRuns(state, run.run_id)
    if run.status == dg.DagsterRunStatus.CANCELED:
        return RequestRuns(state, run.run_id, f"run {run.run_id} was canceled")
    return RequestRuns(state, run.run_id, describe_run_failure(instance, run.run_id))


def run_request_for(
    launch: Launch,
    extra_tags: Mapping[str, str],
    run_config_for: Callable[[Envelope], dict[str, Any]],
) -> dg.RunRequest:
    envelope = launch.envelope
    run_tags = {
        **extra_tags,
        tags.JOB_TYPE: envelope.type,
        tags.TENANT: envelope.tenant_id,
        tags.IDEMPOTENCY_KEY: envelope.idempotency_key,
        tags.REQUEST_KEY: envelope.request_key,
        tags.ENTRY_ID: launch.entry_ids[0],
        tags.PRIORITY: str(envelope.priority),
    }
    if isinstance(envelope.payload, RefundPayload):
        # The run queue runs one refund per PaymentIntent at a time (dagster.yaml's tag
        # concurrency limit), so two refunds cannot both pass the refundable-balance check.
        run_tags[tags.PAYMENT_INTENT] = envelope.payload.payment_intent_id
    return dg.RunRequest(
        run_key=envelope.request_key, run_config=run_config_for(envelope), tags=run_tags
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
