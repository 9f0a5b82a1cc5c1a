"""intake_backlog_sensor against a real Redis: what waits per job type and tenant becomes
materializations of the intake_backlog/<type> assets and a line on the sensor page."""

from __future__ import annotations

import json

import dagster as dg

from sensors.backlog import backlog_asset_key, build_backlog_sensor
from tests.payments.test_payment_flow import payment
from tests.support.harness import IntakeHarness


def evaluate(sensor: dg.SensorDefinition, instance, redis_resource, cursor=None):
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"redis": redis_resource}
    ) as context:
        return sensor.evaluate_tick(context)


def test_backlog_per_job_type_and_tenant_is_recorded_when_it_changes(
    instance, resources, redis_resource, intake, tenant
):
    other = f"{tenant}-b"
    intake.enqueue_many([payment(tenant, f"k{i}") for i in range(3)] + [payment(other, "k0")])
    bad = json.loads(payment(tenant, "bad").model_dump_json())
    bad["payload"]["amount"] = 0  # rejected by the intake sensor: a dead letter
    intake.ensure_group("payment")
    intake.client.xadd(intake.stream_key("payment"), {"envelope": json.dumps(bad)})
    sensor = build_backlog_sensor()

    first = evaluate(sensor, instance, redis_resource)

    [event] = [e for e in first.asset_events if e.asset_key == backlog_asset_key("payment")]
    numbers = {k: v.value for k, v in event.metadata.items() if k != "tenants"}
    assert numbers["waiting"] == 5 and numbers["in_flight"] == 0
    assert numbers["oldest_age_seconds"] >= 0 and numbers["dead_letters"] == 0
    rows = {r.data["tenant"]: r.data for r in event.metadata["tenants"].records}
    assert (rows[tenant]["in_stream"], rows[other]["in_stream"]) == (4, 1)
    assert "payment: 5 waiting, 0 in flight" in first.skip_message
    # Every job type is recorded once, the empty ones too (their plots start at zero).
    assert {e.asset_key for e in first.asset_events} >= {backlog_asset_key("refund")}

    # Nothing changed: nothing recorded again, the tick still says what waits.
    same = evaluate(sensor, instance, redis_resource, first.cursor)
    assert same.asset_events == [] and "payment: 5 waiting" in same.skip_message

    # The intake sensor reads them: four in flight in batches, the bad one dead-lettered.
    IntakeHarness(instance, resources, "payment").tick()
    after = evaluate(sensor, instance, redis_resource, same.cursor)

    [event] = after.asset_events
    numbers = {k: v.value for k, v in event.metadata.items() if k != "tenants"}
    assert (numbers["waiting"], numbers["in_flight"], numbers["dead_letters"]) == (0, 4, 1)
    rows = {r.data["tenant"]: r.data for r in event.metadata["tenants"].records}
    assert rows[tenant]["dead_letters"] == 1
    assert event.description.startswith("payment: 0 waiting, 4 in flight, oldest ")
    assert event.description.endswith(", 1 dead letters")
