"""Drives the real sensors and jobs the way the Dagster daemon does, inside the test process.

A tick evaluates the intake sensor with the cursor of the last successful tick; each run
request is launched unless a run with its run key exists (the daemon's run-key check), runs
execute in process on the test instance, and each finished run is handed to the run-status
sensors. What is under test (sensor bodies, jobs, resources) is the code `make run` loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from queue_pipelines.definitions import defs

RUN_KEY_TAG = "dagster/run_key"


@dataclass
class IntakeHarness:
    instance: dg.DagsterInstance
    resources: dict
    job_type: str
    cursor: str | None = None
    results: list[dg.ExecuteInProcessResult] = field(default_factory=list)
    skipped_run_keys: list[str] = field(default_factory=list)
    sensor_override: dg.SensorDefinition | None = None

    @property
    def sensor(self) -> dg.SensorDefinition:
        return self.sensor_override or defs.resolve_sensor_def(f"{self.job_type}_intake_sensor")

    @property
    def job(self) -> dg.JobDefinition:
        return defs.resolve_job_def(f"{self.job_type}_job")

    def tick(self) -> list[dg.RunRequest]:
        """One sensor evaluation. Like the daemon, keep its cursor only if it returns."""
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        ) as context:
            data = self.sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return list(data.run_requests or [])

    def launch(
        self, request: dg.RunRequest, report: bool = True
    ) -> dg.ExecuteInProcessResult | None:
        existing = self.instance.get_runs(
            filters=dg.RunsFilter(tags={RUN_KEY_TAG: request.run_key}), limit=1
        )
        if existing:
            self.skipped_run_keys.append(request.run_key)
            return None
        result = self.job.execute_in_process(
            run_config=request.run_config,
            instance=self.instance,
            tags={**request.tags, RUN_KEY_TAG: request.run_key},
            resources=self.resources,
            raise_on_error=False,
        )
        self.results.append(result)
        if report:
            self.report_status(result)
        return result

    def report_status(self, result: dg.ExecuteInProcessResult) -> None:
        """Hand a finished run to the run-status sensor that watches its outcome."""
        run = self.instance.get_run_by_id(result.run_id)
        if result.success:
            sensor = defs.resolve_sensor_def("intake_ack_sensor")
            event = result.get_run_success_event()
        else:
            sensor = defs.resolve_sensor_def("intake_dead_letter_sensor")
            event = result.get_run_failure_event()
        with dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=event,
            dagster_instance=self.instance,
            dagster_run=run,
            resources=self.resources,
        ) as context:
            sensor(context.for_run_failure() if not result.success else context)

    def drain(self, max_ticks: int = 50) -> int:
        """Tick and launch until a tick asks for nothing; returns the number of runs executed."""
        executed = 0
        for _ in range(max_ticks):
            requests = self.tick()
            if not requests:
                return executed
            executed += sum(self.launch(request) is not None for request in requests)
        raise AssertionError(f"intake not drained after {max_ticks} ticks")
