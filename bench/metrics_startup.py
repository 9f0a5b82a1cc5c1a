"""The gateway's metrics start-up against a run history of a given size (issue 12).

    .tools/bin/uv run --frozen python -m bench.metrics_startup            # 10,000 runs
    .tools/bin/uv run --frozen python -m bench.metrics_startup --smoke    # 200 runs (CI)

Seeds a fresh PostgreSQL database (TEST_POSTGRES_URL's server, default
postgresql://postgres@127.0.0.1:5432/postgres) with finished payment runs, each with a run
start, a charge's step output and a run end: 50 written through the Dagster instance, the
rest copies of those rows under new run ids. Then measures:

- full_read_seconds: counting the whole history with nothing stored (what every gateway
  start did before the totals were stored; now only the very first start, in the background);
- stored_start_seconds: a new process's RunTotals loading the stored totals and counting
  what ended since (nothing): what the start-up probe waits for now;
- gateway_live_seconds / gateway_startup_seconds: a real `queue-pipelines gateway` process,
  from spawn to its first 200 on /health/live (imports done, serving) and on /health/startup
  (dependencies answered, stored totals loaded). The imports dominate and vary with the
  machine's load, so the load average is recorded beside them, and so is the CPU time the
  process used until start-up passed (gateway_cpu_seconds_to_startup), which does not.

Figures go to stdout and bench/results/metrics_startup.json. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import httpx
import sqlalchemy as sa
from dagster._core.events import DagsterEvent, DagsterEventType, StepOutputData
from dagster._core.execution.plan.outputs import StepOutputHandle

from queue_pipelines import tags
from queue_pipelines.jobs.batch import outcome_table
from queue_pipelines.metrics.run_totals import RunTotals
from queue_pipelines.request_runner import SUCCEEDED, ItemResult
from queue_pipelines.sandbox.servers import free_port

RESULTS = Path(__file__).parent / "results"
SERVER_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
JOB = "payment_job"


def charged(i: int) -> ItemResult:
    """One request's row, as payment_job's outcomes table records it."""
    summary = {"charged": "now", "payment_status": "succeeded", "currency": "usd"}
    return ItemResult(f"payment:bench:k{i}", SUCCEEDED, {**summary, "amount": 1000 + i})


def seed_run(instance: dg.DagsterInstance, i: int) -> None:
    run = instance.add_run(
        dg.DagsterRun(
            job_name=JOB,
            run_id=str(uuid.uuid4()),
            tags={tags.JOB_TYPE: "payment", "queue/tenant": "bench"},
        )
    )
    events = [
        DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name=JOB),
        DagsterEvent(
            event_type_value=DagsterEventType.STEP_OUTPUT.value,
            job_name=JOB,
            step_key="charge_payments",
            event_specific_data=StepOutputData(
                step_output_handle=StepOutputHandle("charge_payments", "result"),
                metadata={"outcomes": outcome_table("payment", [charged(i)])},
            ),
        ),
        DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name=JOB),
    ]
    for event in events:
        instance.report_dagster_event(event, run.run_id)


TEMPLATE_RUNS = 50


def clone_runs(database_url: str, copies: int) -> None:
    """Copy every stored run `copies` times under new run ids, in SQL: rows the same as the
    Dagster instance wrote, at a fraction of the cost (dagster-postgres opens a connection per
    statement). Event storage ids are allocated in order, copy after copy."""
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        for table, body in (("runs", "run_body"), ("run_tags", None), ("event_logs", "event")):
            columns = [c["name"] for c in sa.inspect(conn).get_columns(table) if c["name"] != "id"]
            select = ", ".join(
                "n.new_id"
                if c == "run_id"
                else f"replace(t.{c}, t.run_id, n.new_id)"
                if c == body
                else f"t.{c}"
                for c in columns
            )
            conn.execute(
                sa.text(
                    f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} "
                    f"FROM {table} t CROSS JOIN generate_series(1, :copies) AS k, "
                    "LATERAL (SELECT md5(t.run_id || '-' || k)::uuid::text AS new_id) n "
                    "ORDER BY k, t.id"
                ),
                {"copies": copies},
            )
    engine.dispose()


def seed(instance: dg.DagsterInstance, database_url: str, runs: int) -> float:
    started = time.perf_counter()
    template = min(runs, TEMPLATE_RUNS)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda i: seed_run(instance, i), range(template)))
    if runs > template:
        assert runs % template == 0, f"--runs must be a multiple of {template}"
        clone_runs(database_url, runs // template - 1)
    return time.perf_counter() - started


def gateway_startup(home: Path, database_url: str) -> dict[str, float]:
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": database_url,
        "GATEWAY_JWT_SECRET": "bench-" + "x" * 40,
        "QUEUE_KEY_PREFIX": f"qpbench-{uuid.uuid4().hex[:6]}",
    }
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "queue_pipelines.cli", "gateway", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    figures: dict[str, float] = {}
    try:
        deadline = started + 300
        while time.perf_counter() < deadline:
            for probe in ("live", "startup"):
                if probe in figures:
                    continue
                try:
                    response = httpx.get(f"http://127.0.0.1:{port}/health/{probe}", timeout=2)
                    if response.status_code == 200:
                        figures[probe] = round(time.perf_counter() - started, 2)
                except httpx.HTTPError:
                    pass
            if "startup" in figures:
                figures.setdefault("live", figures["startup"])  # both passed in one round
                # CPU the process used to get there: unlike the wall time, it does not depend
                # on what else the machine runs (the probes' allowance is sized from it).
                fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks = os.sysconf("SC_CLK_TCK")
                figures["cpu"] = round((int(fields[11]) + int(fields[12])) / ticks, 2)
                return figures
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited with {process.returncode}")
            time.sleep(0.05)
        raise RuntimeError("gateway did not start within 300 s")
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="200 runs, for CI")
    args = parser.parse_args()
    runs = 200 if args.smoke else args.runs

    name = f"qp_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(SERVER_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    database_url = SERVER_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            (home / "dagster.yaml").write_text(
                "storage:\n  postgres:\n    postgres_url: " + json.dumps(database_url) + "\n"
                "telemetry:\n  enabled: false\n"
            )
            with dg.instance_for_test(
                overrides={"storage": {"postgres": {"postgres_url": database_url}}}
            ) as instance:
                seed_seconds = seed(instance, database_url, runs)

                first = RunTotals(instance)
                started = time.perf_counter()
                totals = first.refresh()
                full_read = time.perf_counter() - started
                assert totals.runs[("payment", "success")] == runs, totals.runs

                second = RunTotals(instance)
                started = time.perf_counter()
                second.load()
                second.refresh()
                stored_start = time.perf_counter() - started

            figures = {
                "runs": runs,
                "seed_seconds": round(seed_seconds, 1),
                "full_read_seconds": round(full_read, 2),
                "full_read_ms_per_run": round(full_read * 1000 / runs, 2),
                "stored_start_seconds": round(stored_start, 3),
            }
            gateway = gateway_startup(home, database_url)
            figures["gateway_live_seconds"] = gateway.get("live")
            figures["gateway_startup_seconds"] = gateway["startup"]
            figures["gateway_cpu_seconds_to_startup"] = gateway["cpu"]
            figures["load_average_1m"] = round(os.getloadavg()[0], 2)
            figures["cpus"] = os.cpu_count()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("metrics_startup_smoke.json" if args.smoke else "metrics_startup.json")
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
