"""Drives the real intake sensors and jobs inside the test process.

A tick evaluates the intake sensor with the cursor of the last successful tick; each run it
requests is executed in process on the test instance, with the run key tag the daemon would
add. What is under test (the sensor body, the jobs, the resources) is the code `make run`
loads; the daemon itself is exercised against a real dagster-daemon by the stack tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from queue_pipelines.definitions import defs
from queue_pipelines.intake.batches import BatchPolicy
from queue_pipelines.intake.registry import SPECS
from sensors.intake import build_intake_sensor

RUN_KEY_TAG = "dagster/run_key"


@dataclass
class IntakeHarness:
    instance: dg.DagsterInstance
    resources: dict
    job_type: str
    batch_size: int = 100
    max_attempts: int = 3
    max_launch_failures: int = 20
    cursor: str | None = None
    results: list[dg.ExecuteInProcessResult] = field(default_factory=list)
    sensor_override: dg.SensorDefinition | None = None

    @property
    def job(self) -> dg.JobDefinition:
        return defs.resolve_job_def(SPECS[self.job_type].job_name)

    @property
    def sensor(self) -> dg.SensorDefinition:
        # The production sensor, with no wait for fuller batches and no listening for more
        # requests: a test enqueues, then ticks.
        return self.sensor_override or build_intake_sensor(
            self.job_type,
            self.job,
            listen_seconds=0,
            policy=BatchPolicy(
                size=self.batch_size,
                max_wait_seconds=0,
                max_attempts=self.max_attempts,
                max_launch_failures=self.max_launch_failures,
            ),
        )

    def tick(self) -> list[dg.RunRequest]:
        """One sensor evaluation. Like the daemon, keep its cursor only if it returns."""
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        ) as context:
            data = self.sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return list(data.run_requests or [])

    def launch(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        result = self.job.execute_in_process(
            run_config=request.run_config,
            instance=self.instance,
            tags={**request.tags, RUN_KEY_TAG: request.run_key},
            resources=self.resources,
            raise_on_error=False,
        )
        self.results.append(result)
        return result

    def drain(self, max_ticks: int = 50) -> int:
        """Tick and launch until a tick asks for nothing (that tick also settles the batches
        whose runs ended); returns the number of runs executed."""
        executed = 0
        for _ in range(max_ticks):
            requests = self.tick()
            if not requests:
                return executed
            for request in requests:
                self.launch(request)
                executed += 1
        raise AssertionError(f"intake not drained after {max_ticks} ticks")


def outcome_rows(result: dg.ExecuteInProcessResult) -> list[dict]:
    """The run's table of request outcomes (one row per request)."""
    [event] = [
        e
        for e in result.all_events
        if e.event_type in (dg.DagsterEventType.STEP_OUTPUT, dg.DagsterEventType.STEP_FAILURE)
    ]
    if event.event_type == dg.DagsterEventType.STEP_OUTPUT:
        metadata = event.step_output_data.metadata
    else:
        metadata = event.step_failure_data.user_failure_data.metadata
    return [dict(record.data) for record in metadata["outcomes"].records]
