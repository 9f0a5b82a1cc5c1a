"""Why a run failed, in the words a dead letter records."""

import dagster as dg


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
            error = data.error
            # Dagster wraps what the op raised ("Error occurred while executing op ..."):
            # the dead letter says what was raised.
            while (
                error.cause is not None and error.cls_name == "DagsterExecutionStepExecutionError"
            ):
                error = error.cause
            message = error.message.strip()
        else:
            message = "unknown error"
        return f"run {run_id} failed in step {event.step_key}: {message}"
    runs = [r.event_log_entry for r in records]
    detail = runs[-1].dagster_event.message if runs else "no failure event recorded"
    return f"run {run_id} failed: {detail}"
