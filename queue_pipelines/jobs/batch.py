"""What every intake job shares: a run serves a micro-batch of one tenant's requests.

The run's one op parses the batch from its config, hands each request to the job's handler
(queue_pipelines/request_runner.py runs them, several at once, retrying transient failures per
request), and settles each request as soon as it ends: acked when it succeeded, dead-lettered
with its reason when it failed for good. Requests that outlasted their retries are left to
the intake sensor, which batches them again once this run has ended. The op's output is a
table with one row per request (failed ones first), for the run page, and a tally of the
provider calls its requests made (latency per provider, operation and outcome), for /metrics.

A run with a request that did not succeed fails, once every request is settled, so that the
Runs list shows it as failed (docs/operations.md): the failure carries the same table. It is
an op failure raised with allow_retries=False, which Dagster's run retries leave alone
(`retry_on_asset_or_op_failure: false`), and the intake sensor settles a finished run's
requests by their recorded outcomes, not by the run's status.

A re-execution of the run (UI or CLI) skips requests whose outcome is already recorded (their
rows say `settled: earlier`, and the metrics leave them to the run that settled them) and
repeats no recorded effect for the others: every effect goes through the effect ledger.
"""

from __future__ import annotations

import importlib
import statistics
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from queue_pipelines import tags
from queue_pipelines.intake.batches import Batch
from queue_pipelines.intake.registry import SPECS, run_concurrency
from queue_pipelines.intake.schema import describe_validation_error
from queue_pipelines.intake.streams import IntakeStreams
from queue_pipelines.request_runner import (
    FAILED,
    REQUEST_BACKOFF,
    SUCCEEDED,
    UNFINISHED,
    Item,
    ItemResult,
    count_by_status,
    process_items,
)
from queue_pipelines.telemetry.conventions import PROVIDER_CALLS_KEY, SETTLED_EARLIER, SETTLED_KEY
from queue_pipelines.telemetry.provider_calls import tally_provider_calls

PayloadT = TypeVar("PayloadT", bound=BaseModel)

# The most rows the run page's table shows; the counts always cover the whole batch.
MAX_TABLE_ROWS = 1000
# Seconds from a request's enqueue to the start of the run that settled it, and to its
# settlement: the metrics' queue_request_wait_seconds (docs/metrics.md).
WAIT_COLUMNS = ("waited_seconds", "settled_after_seconds")


class BatchRequestConfig(BaseModel):
    """One request of the batch, as the intake sensor wrote it (or an operator, by hand)."""

    model_config = ConfigDict(extra="forbid")

    idempotency_key: str
    payload: dict[str, Any]
    priority: int = 0
    enqueued_at: float | None = Field(default=None, description="unix time it was enqueued")
    attempt: int = Field(default=1, description="how many runs have had this request")


_BATCH_REQUESTS = TypeAdapter(list[BatchRequestConfig])


class BatchConfig(dg.Config):
    tenant_id: str
    # Checked by the op (batch_requests), not by Dagster's config system: its check of a list
    # of 1,000 requests cost 0.14 s of CPU each time a run's config was processed (building
    # the plan in the code server, starting the run worker, ...), the same list as `Any`
    # 0.0001 s (docs/performance.md, "Run workers (issue 18, burst)").
    requests: Any = Field(
        description="The batch's requests, each {idempotency_key: str, payload: {...}, "
        "priority: int = 0, enqueued_at: unix time | null, attempt: int = 1}; the op checks "
        "them and fails the run, saying which field of which request is wrong."
    )
    resend: bool = Field(
        default=False,
        description="Send e-mails and webhooks again even though the ledger says they were "
        "sent (an operator's choice).",
    )

    def batch_requests(self) -> list[BatchRequestConfig]:
        """The requests, checked; a dg.Failure (no retries) naming what is wrong otherwise."""
        try:
            return _BATCH_REQUESTS.validate_python(self.requests)
        except ValidationError as exc:
            raise dg.Failure(
                description="The run config's requests are not a batch: "
                + describe_validation_error(exc, prefix="requests"),
                metadata={"failure_class": "permanent"},
                allow_retries=False,
            ) from exc


def batch_job(job_type: str, op: dg.OpDefinition, *, description: str) -> dg.JobDefinition:
    """The job of an intake job type: its one op (which takes the batch as config, and runs
    it with run_batch), in process, named as the registry says and tagged with the type, so
    that runs launched by hand are counted in the metrics too."""
    spec = SPECS[job_type]

    @dg.job(
        name=spec.job_name,
        executor_def=dg.in_process_executor,
        description=description,
        tags={tags.JOB_TYPE: spec.name},
    )
    def _batch_job():
        op()

    return _batch_job


def job_for(job_type: str) -> dg.JobDefinition:
    """The job the registry names for `job_type`, checked to be that type's batch job."""
    spec = SPECS[job_type]
    module, attribute = spec.job.split(":")
    job = getattr(importlib.import_module(module), attribute)
    if (
        not isinstance(job, dg.JobDefinition)
        or job.name != spec.job_name
        or job.tags.get(tags.JOB_TYPE) != spec.name
        or len(job.graph.nodes) != 1
    ):
        raise ValueError(
            f"{spec.job} is not the {job_type} batch job: build it with "
            f"batch_job({job_type!r}, <its op>, description=...)"
        )
    return job


def batch_op_name(job: dg.JobDefinition) -> str:
    """The op of a batch job, whose config holds the batch."""
    [node] = job.graph.nodes
    return node.name


def batch_run_config(batch: Batch, job: dg.JobDefinition | None = None) -> dict[str, Any]:
    """The run config of a batch's run: its requests under the op of its job (`job`, else
    the one the registry names for the batch's type)."""
    return {
        "ops": {
            batch_op_name(job or job_for(batch.job_type)): {
                "config": {
                    "tenant_id": batch.tenant_id,
                    "requests": [item.as_config() for item in batch.items],
                }
            }
        }
    }


@dataclass(frozen=True)
class Request(Generic[PayloadT]):
    """One request, parsed: what a job's handler gets."""

    tenant_id: str
    idempotency_key: str
    payload: PayloadT
    request_key: str


def request_key_of(job_type: str, tenant_id: str, idempotency_key: str) -> str:
    return f"{job_type}:{tenant_id}:{idempotency_key}"


def _cell(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def outcome_table(
    job_type: str, results: list[ItemResult], waits: dict[str, tuple[float, float]] | None = None
) -> dg.TableMetadataValue:
    """One row per request: what a person needs to find it and see what became of it, and
    how long it waited from enqueue to this run's start and to its settlement (`waits`:
    request key -> those two, in seconds)."""
    waits = waits or {}
    extra: list[str] = []
    for result in results:
        extra += [key for key in result.summary if key not in extra]
    columns = ["request", "status", *extra, "reason", "attempts", *WAIT_COLUMNS]
    rows = [
        dg.TableRecord(
            {
                "request": result.request_key.split(":", 2)[2],
                "status": result.status,
                **{key: _cell(result.summary.get(key)) for key in extra},
                "reason": result.reason,
                "attempts": result.attempts,
                **dict(zip(WAIT_COLUMNS, waits.get(result.request_key, (None, None)), strict=True)),
            }
        )
        # Failed and unfinished requests first: what needs a look is at the top, and never
        # among the rows cut off past MAX_TABLE_ROWS.
        for result in sorted(results, key=lambda r: r.status == SUCCEEDED)[:MAX_TABLE_ROWS]
    ]
    kinds = {"attempts": "int", **dict.fromkeys(WAIT_COLUMNS, "float")}
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, kinds.get(name, "string")) for name in columns]
    )
    return dg.MetadataValue.table(records=rows, schema=schema)


def run_batch(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    *,
    intake: IntakeStreams,
    handle: Callable[[Request], dict[str, Any]],
    after_failure: Callable[[Request, ItemResult], None] = lambda _request, _result: None,
    turns_of: Callable[[Request], Iterable[Hashable]] | None = None,
) -> dg.Output[dict[str, int]]:
    """Work through the batch in `config` with `handle`, settling each request as it ends.
    `after_failure` runs for each request that failed for good, before it is dead-lettered.
    Requests sharing a key of `turns_of(request)` (one ticket's transfers) take turns, in the
    batch's order (process_items). The requests are of the job's type (its queue/job_type
    tag, set by batch_job)."""
    job_type = context.job_def.tags[tags.JOB_TYPE]
    spec = SPECS[job_type]
    entries = config.batch_requests()
    started = time.time()
    run_queue_seconds = _seconds_before_start(context)
    if run_queue_seconds is not None:
        context.log.info(f"waited {run_queue_seconds:.1f} s in the run queue")
    requests: dict[str, Request] = {}
    results: dict[str, ItemResult] = {}
    for entry in entries:
        key = request_key_of(job_type, config.tenant_id, entry.idempotency_key)
        try:
            payload = spec.payload.model_validate(entry.payload)
        except ValidationError as exc:
            reason = f"invalid payload: {describe_validation_error(exc, prefix='payload')}"
            results[key] = ItemResult(key, FAILED, reason=reason, code="invalid_payload")
            intake.request_failed(job_type, key, reason, context.run_id)
            continue
        requests[key] = Request(config.tenant_id, entry.idempotency_key, payload, key)

    for key, recorded in intake.outcomes(list(requests)).items():
        # Settled by an earlier run of this batch (a re-execution): not again. With resend,
        # the requests that succeeded are worked through again for their notices (their
        # effects replay from the ledger); those that failed stay failed (dlq replay).
        if config.resend and recorded.succeeded:
            continue
        # Marked so that the run page shows it and the metrics do not count it again.
        status = SUCCEEDED if recorded.succeeded else FAILED
        results[key] = ItemResult(
            key, status, summary={SETTLED_KEY: SETTLED_EARLIER}, reason=recorded.reason
        )
        del requests[key]

    def settle(result: ItemResult) -> None:
        if result.status == SUCCEEDED:
            intake.request_succeeded(job_type, result.request_key, context.run_id)
        elif result.status == FAILED:
            # First what follows the failure (e.g. the buyer's notice): should recording fail
            # after it, the request runs again and the follow-up, idempotent, is not repeated.
            after_failure(requests[result.request_key], result)
            intake.request_failed(job_type, result.request_key, result.reason, context.run_id)
            context.log.warning(f"{result.request_key} failed for good: {result.reason}")

    step = max(1, len(requests) // 10)

    def progress(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            context.log.info(f"{done} of {total} {job_type} requests done")

    enqueued = {
        request_key_of(job_type, config.tenant_id, e.idempotency_key): e.enqueued_at
        for e in entries
        if e.enqueued_at is not None
    }
    waits = [max(started - at, 0.0) for at in enqueued.values()]
    with tally_provider_calls() as provider_calls:
        for result in process_items(
            [Item(key, request) for key, request in requests.items()],
            handle,
            concurrency=run_concurrency(job_type),
            backoff=REQUEST_BACKOFF,
            on_result=settle,
            on_progress=progress,
            turns_of=turns_of,
        ):
            results[result.request_key] = result

    ordered = [
        results[key]
        for key in (request_key_of(job_type, config.tenant_id, e.idempotency_key) for e in entries)
    ]
    counts = count_by_status(ordered)
    notification_failures = sum("notification_failed" in r.summary for r in ordered)
    if notification_failures:
        # The run succeeds (the effects stand): the tag is what marks it in the Runs list.
        context.instance.add_run_tags(
            context.run_id, {tags.NOTIFICATION_FAILED: str(notification_failures)}
        )
    metadata = {
        "requests": len(ordered),
        **counts,
        "notification_failed": notification_failures,
        "seconds": round(time.time() - started, 3),
        **({"run_queue_seconds": round(run_queue_seconds, 3)} if run_queue_seconds else {}),
        "wait_p50_seconds": round(statistics.median(waits), 3) if waits else 0.0,
        "wait_max_seconds": round(max(waits), 3) if waits else 0.0,
        "outcomes": outcome_table(
            job_type,
            ordered,
            {
                r.request_key: (
                    round(max(started - enqueued[r.request_key], 0.0), 3),
                    round(max(r.ended_at - enqueued[r.request_key], 0.0), 3),
                )
                for r in ordered
                if r.request_key in enqueued and r.status != UNFINISHED and r.attempts
            },
        ),
        # This run's provider calls, for the run workers' latency histograms (docs/metrics.md).
        PROVIDER_CALLS_KEY: dg.MetadataValue.json(provider_calls.as_json()),
    }
    if counts[UNFINISHED] or counts[FAILED]:
        raise dg.Failure(
            description=_failure_description(job_type, ordered, counts),
            # transient: the intake sensor runs the unfinished requests again; permanent: each
            # failed request is dead-lettered with its reason, and nothing runs again.
            metadata={
                **metadata,
                "failure_class": "transient" if counts[UNFINISHED] else "permanent",
            },
            allow_retries=False,
        )
    return dg.Output(counts, metadata=metadata)


def _failure_description(job_type: str, ordered: list[ItemResult], counts: dict[str, int]) -> str:
    """What a failed batch run says at the top of its failure: how many requests of the batch
    failed for good or did not finish, the first reason of each, and that the rest stand."""
    total = len(ordered)
    parts = []
    if counts[FAILED]:
        first = next(r for r in ordered if r.status == FAILED)
        parts.append(
            f"{counts[FAILED]} of {total} {job_type} requests failed for good and were "
            f"dead-lettered (first: {first.request_key}: {first.reason})."
        )
    if counts[UNFINISHED]:
        first = next(r for r in ordered if r.status == UNFINISHED)
        parts.append(
            f"{counts[UNFINISHED]} of {total} did not finish (transient failures outlasted "
            f"{REQUEST_BACKOFF.attempts} attempts; first: {first.reason}): the intake sensor "
            "runs them again once this run has ended."
        )
    parts.append(
        f"{counts[SUCCEEDED]} succeeded and are acked. The outcomes table has every request."
    )
    return " ".join(parts)


def _seconds_before_start(context: dg.OpExecutionContext) -> float | None:
    """From the run's creation (the sensor's request) to its start: the time it waited in
    Dagster's run queue and for its launch, which the Runs list's Duration leaves out."""
    record = context.instance.get_run_record_by_id(context.run_id)
    if record is None or record.start_time is None:
        return None
    return max(record.start_time - record.create_timestamp.timestamp(), 0.0)
