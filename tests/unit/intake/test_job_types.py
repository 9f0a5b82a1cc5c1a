"""A job type is declared once (docs/new-job-type.md): every consumer reads its entry in the
registry (queue_pipelines/intake/registry.py), so a new entry cannot be half-wired.

Two halves. First, every type in SPECS has what each consumer derives from it: a job and a
sensor in the code location, a run config its job takes, its gateway scope, its webhook
endpoint, its metric families, its place in the wire format. Second, a type that exists only
in this test (`ticket_cancel`, a Stripe call then an e-mail, the issue's example) is put in
the registry for the test's duration: its job is built, its runs are requested and counted
by the metrics with no edit anywhere else. What a test-only type cannot show is the sensor
reading its stream: the wire format (the envelope's `type`, the stream keys) is fixed from the
registry when the intake is imported, as a published contract should be; the first half
checks that the real registry's types all have their sensor and stream.
"""

# No `from __future__ import annotations`: Dagster reads the annotations of the op this test
# defines inside a fixture, and a string there would not resolve.
import dataclasses
import sys
from collections import Counter
from typing import Any

import dagster as dg
import pytest
import redis
from pydantic import Field

from queue_pipelines import env_vars, tags
from queue_pipelines.failures import PermanentError
from queue_pipelines.gateway.auth import SCOPE_ALL_JOBS, AuthError, Caller
from queue_pipelines.intake import registry
from queue_pipelines.intake.batches import Batch, BatchItem
from queue_pipelines.intake.keys import IntakeKeys
from queue_pipelines.intake.payloads import WireModel
from queue_pipelines.intake.registry import (
    JOB_TYPES,
    SPECS,
    WEBHOOK_KINDS,
    Family,
    JobTypeSpec,
    RequestMetrics,
)
from queue_pipelines.intake.schema import json_schema
from queue_pipelines.jobs.batch import (
    BatchConfig,
    Request,
    batch_job,
    batch_op_name,
    batch_run_config,
    job_for,
    run_batch,
)
from queue_pipelines.metrics.collector import QueueMetricsCollector, _job_type_families
from queue_pipelines.metrics.run_totals import RESERVED_KEYS, RunTotals, Totals
from queue_pipelines.notifications.tenants import TenantProfile
from resources import WebhookResource
from sensors.intake import run_request_for


def a_batch(job_type: str, *keys: str, tenant: str = "acme") -> Batch:
    """A batch as the sensor forms it (its payloads are the job's to validate, not config's)."""
    items = tuple(
        BatchItem(f"{job_type}:{tenant}:{key}", key, {"order_id": key}, 0, 1_700_000_000.0)
        for key in keys
    )
    return Batch(f"{job_type}:{tenant}:batch", job_type, tenant, items)


# -- every type in the registry is wired everywhere ------------------------------------------


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from queue_pipelines.definitions import defs

    return defs


@pytest.mark.parametrize("spec", registry.JOB_TYPE_SPECS, ids=lambda spec: spec.name)
def test_every_type_has_its_job_and_sensor_in_the_code_location(defs, spec):
    job = defs.resolve_job_def(spec.job_name)
    assert job.tags[tags.JOB_TYPE] == spec.name
    assert job_for(spec.name).name == spec.job_name
    sensor = defs.resolve_sensor_def(f"{spec.name}_intake_sensor")
    assert sensor.job_name == spec.job_name
    # What the sensor asks for is what the job takes: the batch under the job's one op.
    request = run_request_for(a_batch(spec.name, "k1", "k2"), job, {})
    assert request.tags[tags.JOB_TYPE] == spec.name
    assert list(request.run_config["ops"]) == [batch_op_name(job)]
    assert dg.validate_run_config(job, request.run_config)


def test_the_code_location_has_no_intake_job_the_registry_does_not_name(defs):
    # Dagster's implicit asset job (over the intake_backlog assets, which no run makes) aside.
    tagged = {
        job.tags.get(tags.JOB_TYPE)
        for job in defs.resolve_all_job_defs()
        if not job.name.startswith("__ASSET_JOB")
    }
    assert tagged - set(JOB_TYPES) <= {"wallet_balance"}  # the scheduled check, not an intake


@pytest.mark.parametrize("spec", registry.JOB_TYPE_SPECS, ids=lambda spec: spec.name)
def test_every_type_is_on_the_wire_with_its_stream(spec):
    assert spec.name in json_schema()["properties"]["type"]["enum"]
    assert IntakeKeys("qp").stream(spec.name) == f"qp:intake:{spec.name}"


@pytest.mark.parametrize("spec", registry.JOB_TYPE_SPECS, ids=lambda spec: spec.name)
def test_every_type_is_written_at_the_gateway_by_its_scope(spec):
    Caller("acme", None, frozenset({spec.scope})).authorize("acme", spec.name, False)
    everything = Caller("acme", None, frozenset({SCOPE_ALL_JOBS}))
    unscoped = Caller("acme", None, None)
    if spec.scope_by_name:
        for caller, allow_unscoped in ((everything, False), (unscoped, True)):
            with pytest.raises(AuthError, match=spec.scope):
                caller.authorize("acme", spec.name, allow_unscoped)
    else:
        everything.authorize("acme", spec.name, False)
        unscoped.authorize("acme", spec.name, True)
    # A type tenants may not submit says where it enters instead (the gateway's 403).
    assert spec.tenant_submittable or spec.tenant_refusal


@pytest.mark.parametrize("kind", WEBHOOK_KINDS)
def test_every_webhook_kind_has_its_endpoint_everywhere(kind, monkeypatch):
    assert f"{kind}_url" in WebhookResource.model_fields
    assert TenantProfile(webhooks={kind: "https://acme.test/hook"}).webhooks[kind]
    variable = f"WEBHOOK_URL_{kind.upper()}"
    assert variable in {v.name for v in env_vars.VARIABLES}
    monkeypatch.setenv(variable, "https://platform.test/hook")
    from queue_pipelines.deployment import webhook_resource

    assert getattr(webhook_resource(), f"{kind}_url") is not None


def test_every_type_with_request_metrics_has_its_families():
    families = [f for spec in SPECS.values() if spec.metrics for f in spec.metrics.families]
    names = [metric.name for metric in _job_type_families(SPECS, Totals())]
    assert names == [f.metric.removesuffix("_total") for f in families]
    keys = [f.totals_key for f in families]
    assert len(set(keys)) == len(keys) and not set(keys) & RESERVED_KEYS
    assert len({f.metric for f in families}) == len(families)


# -- a type that exists only in this test ---------------------------------------------------


class TicketCancelPayload(WireModel):
    order_id: str = Field(min_length=1)


TICKET_CANCEL = JobTypeSpec(
    "ticket_cancel",
    TicketCancelPayload,
    f"{__name__}:ticket_cancel_job",
    batch_size=50,
    concurrency=2,
    webhook_kind="refund",
    metrics=RequestMetrics(
        done_column="cancelled",
        requests=Family("tickets_cancelled_total", "Ticket cancellations by outcome.", "cancels"),
    ),
)


class SettledRequests:
    """The intake as a batch run sees it: what was settled before, and settling each."""

    def __init__(self):
        self.settled: dict[str, str] = {}

    def outcomes(self, request_keys):
        return {}

    def request_succeeded(self, job_type: str, request_key: str, run_id: str) -> int:
        self.settled[request_key] = f"{job_type} succeeded"
        return 1

    def request_failed(self, job_type: str, request_key: str, reason: str, run_id: str) -> int:
        self.settled[request_key] = f"{job_type} failed: {reason}"
        return 1


class NoRedis:
    def stats(self):
        raise redis.ConnectionError("this test has no Redis")


@pytest.fixture
def ticket_cancel(monkeypatch) -> tuple[dg.JobDefinition, SettledRequests]:
    """`ticket_cancel` in the registry, and its job module: an op over run_batch."""
    monkeypatch.setitem(SPECS, TICKET_CANCEL.name, TICKET_CANCEL)
    intake = SettledRequests()

    @dg.op
    def cancel_tickets(context: dg.OpExecutionContext, config: BatchConfig):
        def cancel(request: Request[TicketCancelPayload]) -> dict[str, Any]:
            if request.payload.order_id == "gone":
                raise PermanentError("no such ticket", code="no_ticket")
            return {"order_id": request.payload.order_id, "cancelled": "now"}

        return run_batch(context, config, intake=intake, handle=cancel)

    job = batch_job("ticket_cancel", cancel_tickets, description="Cancel tickets (a test).")
    monkeypatch.setattr(sys.modules[__name__], "ticket_cancel_job", job, raising=False)
    return job, intake


def test_a_new_type_is_built_run_and_counted_from_its_entry_alone(ticket_cancel):
    job, intake = ticket_cancel
    # The job: named, tagged and found as the registry says; its op from the job itself.
    assert (job.name, job.tags) == ("ticket_cancel_job", {tags.JOB_TYPE: "ticket_cancel"})
    assert job_for("ticket_cancel") is job
    assert batch_op_name(job) == "cancel_tickets"
    assert registry.run_concurrency("ticket_cancel") == 2
    # The gateway's scope for it.
    Caller("acme", None, frozenset({"jobs:write:ticket_cancel"})).authorize(
        "acme", "ticket_cancel", False
    )

    request = run_request_for(a_batch("ticket_cancel", "t1", "t2"), job, {})
    # The sensor's run request, as the intake sensor makes it for a batch of the type.
    assert request.tags[tags.JOB_TYPE] == "ticket_cancel"
    assert batch_run_config(a_batch("ticket_cancel", "t1", "t2")) == request.run_config
    run_config = request.run_config
    run_config["ops"]["cancel_tickets"]["config"]["requests"][1]["payload"] = {"order_id": "gone"}

    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False
        )
        assert not result.success  # a request failed for good: the run says so
        assert intake.settled == {
            "ticket_cancel:acme:t1": "ticket_cancel succeeded",
            "ticket_cancel:acme:t2": "ticket_cancel failed: no such ticket",
        }
        totals = RunTotals(instance).refresh()
        assert totals.family("cancels") == Counter({"success": 1, "failure": 1})
        assert totals.runs[("ticket_cancel", "failure")] == 1
        scraped = {
            metric.name: metric for metric in QueueMetricsCollector(instance, NoRedis()).collect()
        }
    samples = {tuple(s.labels.items()): s.value for s in scraped["tickets_cancelled"].samples}
    assert samples == {(("status", "failure"),): 1.0, (("status", "success"),): 1.0}
    queues = {s.labels["queue"] for s in scraped["queue_jobs_processed"].samples}
    assert "ticket_cancel" in queues


def test_a_new_type_without_metrics_or_webhooks_is_counted_per_run_only(ticket_cancel):
    plain = dataclasses.replace(TICKET_CANCEL, metrics=None, webhook_kind=None)
    totals = Totals()
    assert list(_job_type_families({"ticket_cancel": plain}, totals)) == []


def test_a_job_that_does_not_serve_its_type_is_refused_at_load(ticket_cancel, monkeypatch):
    job, _ = ticket_cancel
    untagged = dg.GraphDefinition("ticket_cancel_job", node_defs=[job.graph.node_defs[0]])
    monkeypatch.setattr(sys.modules[__name__], "ticket_cancel_job", untagged.to_job())
    with pytest.raises(ValueError, match="not the ticket_cancel batch job"):
        job_for("ticket_cancel")
