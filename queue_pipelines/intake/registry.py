"""The job types: one table, from which the wire format, the streams, the sensors and the
jobs are all derived. Adding a job type is one entry here plus its job module.

Each entry names its job by import path, so this table (part of the wire format, loaded by
producers) imports no Dagster and no job code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from queue_pipelines.intake.payloads import (
    MintPayload,
    NotificationPayload,
    PaymentPayload,
    RefundPayload,
    StripeEventPayload,
    TransferPayload,
    WireModel,
)


@dataclass(frozen=True)
class JobTypeSpec:
    """One job type: its payload, the job that serves it, and how its requests are batched.

    `batch_size` requests of one tenant share a run (1: one run per request); a batch smaller
    than that waits at most `max_wait_seconds` for more before it is launched anyway.
    `concurrency` is how many of a run's requests are worked on at once.
    """

    name: str
    payload: type[WireModel]
    job: str  # "module:attribute" of the Dagster job
    op: str  # the job's op that takes the batch as config
    batch_size: int = 100
    max_wait_seconds: float = 0.5
    concurrency: int = 8


JOB_TYPE_SPECS: tuple[JobTypeSpec, ...] = (
    # A run's launch costs seconds of CPU (a process importing Dagster and the code location),
    # so a burst drains fastest in few large runs: 1,000 payments went 14/s in runs of 100 and
    # 23/s in runs of 500 (docs/performance.md). A lone payment still goes after max_wait.
    JobTypeSpec(
        "payment",
        PaymentPayload,
        "queue_pipelines.jobs.payment:payment_job",
        "charge_payments",
        batch_size=500,
        # Mostly waiting on Stripe (hundreds of ms a call in production): 16 at once made
        # 32 payments/s with 300 ms added to every call, 8 made 19/s.
        concurrency=16,
    ),
    JobTypeSpec(
        "refund", RefundPayload, "queue_pipelines.jobs.refund:refund_job", "refund_payments"
    ),
    # A mint is a few Solana transactions each; the payer's balance is shared by all of them.
    JobTypeSpec(
        "mint", MintPayload, "queue_pipelines.jobs.mint:mint_job", "mint_tickets", concurrency=4
    ),
    # A resale: one transaction each, signed by the custodial holder, within the tenant's mints.
    JobTypeSpec(
        "transfer",
        TransferPayload,
        "queue_pipelines.jobs.nft_transfer:nft_transfer_job",
        "transfer_tickets",
        concurrency=4,
    ),
    JobTypeSpec(
        "notification",
        NotificationPayload,
        "queue_pipelines.jobs.notification:notification_job",
        "send_notifications",
        batch_size=500,
    ),
    JobTypeSpec(
        "stripe_event",
        StripeEventPayload,
        "queue_pipelines.jobs.stripe_event:stripe_event_job",
        "reconcile_stripe_events",
    ),
)

SPECS: dict[str, JobTypeSpec] = {spec.name: spec for spec in JOB_TYPE_SPECS}


def run_concurrency(job_type: str) -> int:
    """How many of a run's requests are worked on at once: QP_CONCURRENCY_<TYPE> in the run
    worker's environment (e.g. more for a provider far away), else the registry's."""
    name = f"QP_CONCURRENCY_{job_type.upper()}"
    value = int(os.environ.get(name) or SPECS[job_type].concurrency)
    if value < 1:
        raise ValueError(f"{name} must be 1 or more")
    return value


JOB_TYPES: tuple[str, ...] = tuple(SPECS)
PAYLOAD_MODELS: dict[str, type[WireModel]] = {spec.name: spec.payload for spec in JOB_TYPE_SPECS}
JobType = Literal[JOB_TYPES]  # type: ignore[valid-type]  # the registry's names, for pydantic
