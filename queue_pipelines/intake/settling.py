"""What a finished run means for the requests of its batch: the settle rule, the one place
that decides it.

    the run recorded the request's outcome  -> ack it (succeeded) or dead-letter it (failed)
    no outcome, the run started work       -> batch the request again (attempt + 1), or
                (crash, cancel, transient      dead-letter it once `max_attempts` runs have
                 give-up)                      ended without settling it
    no outcome, the run never started a    -> batch it again without counting an attempt: that
                step (launch failure, cancel   is not the request's fault; only after
                before start, shutdown)        `max_launch_failures` such runs is it
                                               dead-lettered, saying nothing was done
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from queue_pipelines.intake.batches import Batch, BatchItem, BatchPolicy
from queue_pipelines.intake.streams import IntakeStreams


class RunState(Enum):
    IN_PROGRESS = "in_progress"
    ENDED = "ended"  # succeeded, failed or canceled: the outcomes it recorded say the rest


@dataclass(frozen=True)
class BatchRun:
    state: RunState
    run_id: str
    failure: str = ""  # why the run failed, for requests it never settled
    started: bool = True  # whether any step of it started: none, and nothing was attempted


# Given batch keys, the state of the run that exists for each (absent: none yet).
RunLookup = Callable[[Sequence[str]], Mapping[str, BatchRun]]


@dataclass
class Settled:
    """What settling the in-flight batches came to."""

    again: list[BatchItem] = field(default_factory=list)  # requests to batch again
    unlaunched: list[Batch] = field(default_factory=list)  # batches with no run yet
    acked: int = 0
    dead_lettered: list[tuple[str, str]] = field(default_factory=list)  # (request, reason)
    # Tenants with a batch still in flight: its run queued, working, or not created yet.
    busy_tenants: set[str] = field(default_factory=set)


def settle_ended_batches(
    streams: IntakeStreams, job_type: str, lookup_runs: RunLookup, policy: BatchPolicy
) -> Settled:
    """Apply the settle rule to every in-flight batch whose run has ended. Batches whose run
    is missing are returned to be requested again as they are."""
    settled = Settled()
    batch_keys = streams.inflight_batches(job_type)
    if not batch_keys:
        return settled
    runs = lookup_runs(batch_keys)
    for batch_key in batch_keys:
        stored = streams.batch(batch_key)
        if stored is None:  # finished by an earlier tick that failed before its cursor
            streams.finish_batch(job_type, batch_key, [])
            continue
        batch = Batch.from_json(stored)
        run = runs.get(batch_key)
        if run is None:
            settled.unlaunched.append(batch)  # the same run key: launched once by the daemon
            settled.busy_tenants.add(batch.tenant_id)
            continue
        if run.state is RunState.IN_PROGRESS:
            settled.busy_tenants.add(batch.tenant_id)
            continue
        keys = [item.request_key for item in batch.items]
        recorded = streams.outcomes(keys)
        succeeded: list[str] = []
        for item in batch.items:
            found = recorded.get(item.request_key)
            if found is not None:
                # The run recorded it; settling again is harmless and covers a crash between
                # recording and acking.
                if found.succeeded:
                    succeeded.append(item.request_key)
                else:
                    streams.dead_letter_request(
                        job_type, item.request_key, found.reason, found.run_id
                    )
            elif not run.started and item.launch_failures + 1 < policy.max_launch_failures:
                settled.again.append(replace(item, launch_failures=item.launch_failures + 1))
            elif not run.started:
                reason = (
                    f"{run.failure or f'run {run.run_id} ended'}; {item.launch_failures + 1} runs "
                    "of the request ended before any step started, so nothing was done for it: "
                    "replay it once the stack launches runs again"
                )
                streams.request_failed(job_type, item.request_key, reason, run.run_id)
                settled.dead_lettered.append((item.request_key, reason))
            elif item.attempt < policy.max_attempts:
                settled.again.append(replace(item, attempt=item.attempt + 1))
            else:
                reason = (
                    f"{run.failure or f'run {run.run_id} ended'}; the request was not settled "
                    f"after {item.attempt} runs"
                )
                streams.request_failed(job_type, item.request_key, reason, run.run_id)
                settled.dead_lettered.append((item.request_key, reason))
        if succeeded:  # one round trip for the batch
            settled.acked += streams.settle_all(job_type, succeeded)
        streams.finish_batch(job_type, batch_key, keys)
    return settled
