"""The job types: one table, from which the wire format, the streams, the sensors, the jobs
and their tags, the gateway's rules and the metrics are all derived. Adding a job type is one
entry here plus its job module (docs/new-job-type.md).

Each entry names its job by import path, so this table (part of the wire format, loaded by
producers) imports no Dagster and no job code. The job's op, whose config holds the batch, is
found from the job itself (its one op).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from queue_pipelines.intake.payloads import (
    CustomerPayload,
    MintPayload,
    NotificationPayload,
    PaymentPayload,
    RefundPayload,
    StripeEventPayload,
    TransferPayload,
    WireModel,
)
from queue_pipelines.settings import load

# The gateway's scope that writes every job type (but those whose scope is by name only);
# `jobs:write:<type>` writes one type.
JOBS_WRITE_SCOPE = "jobs:write"


@dataclass(frozen=True)
class Family:
    """A Prometheus family counted from a job type's requests. `totals_key` names its totals
    in the instance's stored run totals (queue_pipelines/metrics/run_totals.py): never rename
    one, or that family starts again from zero."""

    metric: str
    help: str
    totals_key: str


@dataclass(frozen=True)
class RequestMetrics:
    """How /metrics counts a job type's requests, from each one's row in its run's `outcomes`
    table (docs/metrics.md). A row counts when this run did the effect (its `done_column` is
    `now`, not `earlier`) or when the request failed for good.

    Without `status_column`, `requests` is labelled `status` (success, failure), after
    `label_field` when there is one: that field of the row, or of a failed request's payload
    (customer: `action`, so a refused delete counts as ("delete", "failure")). With it,
    `requests` is labelled `currency` and `status` (the row's `status_column`, or `failed`),
    and `amounts` sums the `amount` of the done rows whose status is in `amount_statuses`, per
    currency. A failed row's currency is its request's (`failed_currency_from_request`, read
    from the run config) or `unknown`."""

    done_column: str
    requests: Family
    status_column: str | None = None
    amounts: Family | None = None
    amount_statuses: tuple[str, ...] = ("succeeded",)
    failed_currency_from_request: bool = False
    label_field: str | None = None

    @property
    def families(self) -> tuple[Family, ...]:
        return (self.requests, *((self.amounts,) if self.amounts else ()))


@dataclass(frozen=True)
class JobTypeSpec:
    """One job type: its payload, the job that serves it, how its requests are batched, who
    may submit it at the gateway, what its notices' webhooks are called, and how the metrics
    count it.

    `batch_size` requests of one tenant share a run (1: one run per request); a batch smaller
    than that waits at most `max_wait_seconds` for more before it is launched anyway, and
    while the tenant has no batch of the type in flight, only until no request has come for
    `quiet_seconds` (BatchPolicy says why).
    `concurrency` is how many of a run's requests are worked on at once.
    """

    name: str
    payload: type[WireModel]
    job: str  # "module:attribute" of the Dagster job; the attribute is the job's name
    batch_size: int = 100
    max_wait_seconds: float = 0.5
    quiet_seconds: float | None = 0.1
    concurrency: int = 8
    # The gateway's POST /v1/jobs: "" when tenants may submit it, else the route it enters by
    # instead (the 403 names it).
    tenant_refusal: str = ""
    # Only a token naming the type's scope (`jobs:write:<type>`) may write it: neither
    # `jobs:write` nor a token without a scope claim includes it.
    scope_by_name: bool = False
    # Each request is an e-mail in the platform's name, to an address the producer chose: it
    # counts against its tenant's daily e-mail quota at the gateway, and a failed request is a
    # failed e-mail in the metrics.
    request_is_email: bool = False
    # The endpoint its notices' webhooks go to (WEBHOOK_URL_<KIND>, a tenant profile's
    # `webhooks`); None: it sends none.
    webhook_kind: str | None = None
    # How the metrics count its requests; None: only its runs are counted (per queue).
    metrics: RequestMetrics | None = field(default=None)

    @property
    def job_name(self) -> str:
        return self.job.rsplit(":", 1)[1]

    @property
    def scope(self) -> str:
        """The gateway scope that writes this type by name."""
        return f"{JOBS_WRITE_SCOPE}:{self.name}"

    @property
    def tenant_submittable(self) -> bool:
        return not self.tenant_refusal


JOB_TYPE_SPECS: tuple[JobTypeSpec, ...] = (
    # A run's launch costs seconds of CPU (a process importing Dagster and the code location),
    # so a burst drains fastest in few large runs: 1,000 payments went 14/s in runs of 100 and
    # 23/s in runs of 500; 2,000 in runs of 1,000 fit the run queue's 2 runs per tenant at
    # once, with no run waiting for another to end (docs/performance.md). A lone payment
    # still goes after max_wait.
    JobTypeSpec(
        "payment",
        PaymentPayload,
        "queue_pipelines.jobs.payment:payment_job",
        batch_size=1000,
        # Mostly waiting on Stripe (hundreds of ms a call in production): 16 at once made
        # 32 payments/s with 300 ms added to every call, 8 made 19/s.
        concurrency=16,
        webhook_kind="payment",
        metrics=RequestMetrics(
            done_column="charged",
            requests=Family(
                "payments_processed_total",
                "Payment requests by currency and status: the PaymentIntent's status when this run "
                "charged it, or failed (failed for good).",
                "payments",
            ),
            status_column="payment_status",
            amounts=Family(
                "payment_amount_total_cents",
                "Sum of succeeded payments, in the currency's smallest unit (monotonic).",
                "payment_amounts",
            ),
            failed_currency_from_request=True,
        ),
    ),
    JobTypeSpec(
        "refund",
        RefundPayload,
        "queue_pipelines.jobs.refund:refund_job",
        webhook_kind="refund",
        metrics=RequestMetrics(
            done_column="refunded",
            requests=Family(
                "refunds_processed_total",
                "Refund requests by currency and status: the refund's status when this run made "
                "it, or failed (failed for good).",
                "refunds",
            ),
            status_column="refund_status",
            amounts=Family(
                "refund_amount_total_cents",
                "Sum of refunds made, in the currency's smallest unit (monotonic).",
                "refund_amounts",
            ),
            # A pending refund is issued: Stripe settles it with no further call from here.
            amount_statuses=("succeeded", "pending"),
        ),
    ),
    # A mint is a few Solana transactions each; the payer's balance is shared by all of them.
    JobTypeSpec(
        "mint",
        MintPayload,
        "queue_pipelines.jobs.mint:mint_job",
        concurrency=4,
        webhook_kind="nft",
        metrics=RequestMetrics(
            done_column="minted",
            requests=Family(
                "nfts_minted_total",
                "Mint requests by outcome: success (minted by this run), failure (failed for good).",
                "mints",
            ),
        ),
    ),
    # A resale: one transaction each, signed by the custodial holder, within the tenant's mints.
    JobTypeSpec(
        "transfer",
        TransferPayload,
        "queue_pipelines.jobs.nft_transfer:nft_transfer_job",
        concurrency=4,
        metrics=RequestMetrics(
            done_column="transferred",
            requests=Family(
                "nft_transfers_total",
                "Transfer requests by outcome: success (sent by this run; not replays or "
                "already held), failure (failed for good).",
                "transfers",
            ),
        ),
    ),
    # Create, update, delete a tenant's Stripe customers. Deleting is not undone: granted on
    # purpose (jobs:write:customer), not with every token that may charge.
    JobTypeSpec(
        "customer",
        CustomerPayload,
        "queue_pipelines.jobs.customer:customer_job",
        scope_by_name=True,
        metrics=RequestMetrics(
            done_column="changed",
            requests=Family(
                "customers_managed_total",
                "Customer requests by action (create, update, delete) and status: success "
                "(changed by this run), failure (failed for good).",
                "customers",
            ),
            label_field="action",
        ),
    ),
    JobTypeSpec(
        "notification",
        NotificationPayload,
        "queue_pipelines.jobs.notification:notification_job",
        batch_size=500,
        # Mail in the platform's name to any address: granted on purpose or not at all.
        scope_by_name=True,
        request_is_email=True,
    ),
    JobTypeSpec(
        "stripe_event",
        StripeEventPayload,
        "queue_pipelines.jobs.stripe_event:stripe_event_job",
        tenant_refusal="Stripe events enter only through /v1/webhooks/stripe",
    ),
)

SPECS: dict[str, JobTypeSpec] = {spec.name: spec for spec in JOB_TYPE_SPECS}


def run_concurrency(job_type: str) -> int:
    """How many of a run's requests are worked on at once: QP_CONCURRENCY_<TYPE> in the run
    worker's environment (e.g. more for a provider far away; the settings refuse less than 1),
    else the registry's."""
    return load().qp_concurrency.get(job_type, SPECS[job_type].concurrency)


JOB_TYPES: tuple[str, ...] = tuple(SPECS)
PAYLOAD_MODELS: dict[str, type[WireModel]] = {spec.name: spec.payload for spec in JOB_TYPE_SPECS}
JobType = Literal[JOB_TYPES]  # type: ignore[valid-type]  # the registry's names, for pydantic
# The webhook endpoints there are, one per kind (WEBHOOK_URL_<KIND>), in the table's order.
WEBHOOK_KINDS: tuple[str, ...] = tuple(
    dict.fromkeys(spec.webhook_kind for spec in JOB_TYPE_SPECS if spec.webhook_kind)
)
