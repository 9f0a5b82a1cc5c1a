"""The batch's requests in a run's config: Dagster checks only that they are there (a list of
1,000 typed for Dagster's config system cost 0.14 s of CPU each time the config was
processed); the op checks each request, and a wrong one fails the run saying what is wrong,
before any request is worked on."""

# No `from __future__ import annotations`: Dagster reads the annotations of the op below.

import dagster as dg
import pytest

from queue_pipelines.jobs.batch import BatchConfig, BatchRequestConfig
from queue_pipelines.jobs.payment import payment_job


def a_config(requests) -> BatchConfig:
    return BatchConfig(tenant_id="acme", requests=requests)


def test_requests_written_by_the_sensor_or_by_hand_are_parsed_with_their_defaults():
    parsed = a_config(
        [
            {"idempotency_key": "k1", "payload": {"amount": 1}},
            {
                "idempotency_key": "k2",
                "payload": {},
                "priority": 5,
                "enqueued_at": 1.5,
                "attempt": 2,
            },
        ]
    ).batch_requests()

    assert parsed == [
        BatchRequestConfig(idempotency_key="k1", payload={"amount": 1}),
        BatchRequestConfig(
            idempotency_key="k2", payload={}, priority=5, enqueued_at=1.5, attempt=2
        ),
    ]
    assert (parsed[0].priority, parsed[0].enqueued_at, parsed[0].attempt) == (0, None, 1)


@pytest.mark.parametrize(
    ("requests", "said"),
    [
        ([{"payload": {}}], "requests.0.idempotency_key: Field required"),
        ([{"idempotency_key": "k", "payload": {}, "atempt": 2}], "requests.0.atempt"),
        ([{"idempotency_key": "k", "payload": "x"}], "requests.0.payload"),
        ({"idempotency_key": "k"}, "requests"),
        (None, "requests"),
    ],
)
def test_a_wrong_request_fails_the_run_for_good_saying_where(requests, said):
    with pytest.raises(dg.Failure) as failure:
        a_config(requests).batch_requests()

    assert failure.value.description.startswith("The run config's requests are not a batch: ")
    assert said in failure.value.description
    assert failure.value.allow_retries is False


def test_dagster_still_wants_the_requests_and_takes_the_sensors_config():
    with pytest.raises(dg.DagsterInvalidConfigError, match='"requests"'):
        dg.validate_run_config(
            payment_job, {"ops": {"charge_payments": {"config": {"tenant_id": "acme"}}}}
        )
    run_config = {"ops": {"charge_payments": {"config": {"tenant_id": "acme", "requests": []}}}}
    assert dg.validate_run_config(payment_job, run_config)
