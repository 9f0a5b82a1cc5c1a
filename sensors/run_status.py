"""Run-status sensors: settle intake entries once their run reached a terminal state.

These are the fast path. Entries whose run ended while these sensors were behind or stopped
are settled by the intake sensor's scan of stale pending entries, so nothing waits forever.
"""

from collections.abc import Sequence

import dagster as dg

from queue_pipelines import tags
from resources import RedisResource


def describe_run_failure(instance: dg.DagsterInstance, run_id: str) -> str:
    """The failed step and the failure's own words, as the dead letter records them."""
    records = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
    ).records
    steps = [
        r.event_log_entry.dagster_event
        for r in records
        if r.event_log_entry.dagster_event.event_type == dg.DagsterEventType.STEP_FAILURE
    ]
    if steps:
        event = steps[-1]
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            message = data.user_failure_data.description
        elif data.error:
            message = data.error.message.strip()
        else:
            message = "unknown error"
        return f"run {run_id} failed in step {event.step_key}: {message}"
    runs = [r.event_log_entry for r in records]
    detail = runs[-1].dagster_event.message if runs else "no failure event recorded"
    return f"run {run_id} failed: {detail}"


def build_run_status_sensors(
    jobs: Sequence[dg.JobDefinition], minimum_interval_seconds: int = 5
) -> list[dg.SensorDefinition]:
    @dg.run_status_sensor(
        name="intake_ack_sensor",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=list(jobs),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Acks and removes the intake entries of every run that succeeded.",
    )
    def intake_ack_sensor(context: dg.RunStatusSensorContext, redis: RedisResource):
        run = context.dagster_run
        # Returning a SkipReason would end this tick's batch of runs; returning nothing does not.
        if tags.REQUEST_KEY not in run.tags:
            return
        settled = redis.intake().settle(run.tags[tags.JOB_TYPE], run.tags[tags.REQUEST_KEY])
        context.log.info(f"run {run.run_id} succeeded: acked {settled} intake entries")

    @dg.run_failure_sensor(
        name="intake_dead_letter_sensor",
        monitored_jobs=list(jobs),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Moves the intake entries of every failed run to the dead-letter stream.",
    )
    def intake_dead_letter_sensor(context: dg.RunFailureSensorContext, redis: RedisResource):
        run = context.dagster_run
        if tags.REQUEST_KEY not in run.tags:
            return
        if run.tags.get(tags.WILL_RETRY) == "true":
            context.log.info(f"run {run.run_id} failed and Dagster will retry it; entries wait")
            return
        if tags.NOTIFICATION_FAILED in run.tags:
            # The charge/refund/mint succeeded; only telling about it failed (the run and an
            # operator alert say so). Dead-lettering would read as "the payment failed".
            settled = redis.intake().settle(run.tags[tags.JOB_TYPE], run.tags[tags.REQUEST_KEY])
            context.log.warning(
                f"run {run.run_id}: its effect stands but notification step(s) "
                f"{run.tags[tags.NOTIFICATION_FAILED]} failed for good; acked {settled} entries"
            )
            return
        reason = describe_run_failure(context.instance, run.run_id)
        moved = redis.intake().dead_letter_request(
            run.tags[tags.JOB_TYPE], run.tags[tags.REQUEST_KEY], reason, run.run_id
        )
        context.log.warning(f"run {run.run_id} failed: dead-lettered {moved} entries: {reason}")

    return [intake_ack_sensor, intake_dead_letter_sensor]
