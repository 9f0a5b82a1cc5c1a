"""A real Dagster deployment for integration tests: code server, `dagster-daemon run` and
`dagster-webserver`, each a subprocess of one process group, over a DAGSTER_HOME of the test's.

The code location sees the test's Redis (REDIS_URL, its own key prefix via QUEUE_KEY_PREFIX),
localstripe (STRIPE_API_BASE) and SMTP sink (SMTP_HOST/SMTP_PORT). The run workers that the
default run launcher starts are forked by the code server's forkserver (as under `make run`:
queue_pipelines/warm_code_server.py) and stay in the same process group, so a signal to the
group reaches the whole stack, as Ctrl-C in a terminal does, and teardown leaves no process
behind.

Each stack costs several seconds of CPU to start (four Python processes importing Dagster);
tests start as few as they can and share one where they may.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from dagster_graphql import DagsterGraphQLClient

from queue_pipelines.sandbox.dev import code_server_command, write_workspace
from queue_pipelines.sandbox.processes import group_alive, wait_group_gone
from queue_pipelines.sandbox.servers import free_port, port_open

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# What a test may want to wait for through GraphQL.
RUNS_QUERY = """
query Runs($filter: RunsFilter, $limit: Int) {
  runsOrError(filter: $filter, limit: $limit) {
    __typename
    ... on Runs {
      results { runId jobName status tags { key value } }
    }
    ... on PythonError { message }
  }
}
"""

DAEMON_HEALTH_QUERY = """
query DaemonHealth {
  instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } }
}
"""


def instance_config(*, postgres_url: str | None = None, overrides: dict | None = None) -> dict:
    """The project's dagster.yaml, on SQLite under DAGSTER_HOME or on `postgres_url`."""
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    if postgres_url:
        config["storage"] = {"postgres": {"postgres_url": postgres_url}}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@dataclass
class DagsterStack:
    home: Path
    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    webserver_port: int = 0
    code_server_port: int = 0
    starts: int = 0

    @property
    def pgid(self) -> int | None:
        leader = self.processes.get("code-server")
        return leader.pid if leader is not None else None

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.{self.starts}.log", "ab")  # noqa: SIM115
        group = self.pgid if self.pgid is not None else 0
        process = subprocess.Popen(
            argv,
            env=self.env,
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            process_group=group,
        )
        log.close()
        self.processes[name] = process
        return process

    def start(self, timeout: float = 600) -> DagsterStack:
        """Start code server, daemon and webserver; return once the webserver answers and
        every required daemon has a healthy heartbeat."""
        self.starts += 1
        self.processes = {}
        self.code_server_port, self.webserver_port = free_port(), free_port()
        workspace = write_workspace(self.home, self.code_server_port)
        deadline = time.monotonic() + timeout
        # The code server first: it leads the process group that everything else joins.
        self._spawn("code-server", code_server_command(self.code_server_port))
        self._wait(lambda: port_open(self.code_server_port), "the code server", deadline)
        self._spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)])
        self._spawn(
            "webserver",
            [
                str(BIN / "dagster-webserver"), "-w", str(workspace),
                "-h", "127.0.0.1", "-p", str(self.webserver_port),
            ],
        )  # fmt: skip
        self._wait(lambda: port_open(self.webserver_port), "the webserver", deadline)
        self._wait(self.daemons_healthy, "healthy daemon heartbeats", deadline)
        return self

    def _wait(self, ready, what: str, deadline: float) -> None:
        while not ready():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with code {process.returncode} while waiting for {what}; "
                        f"log: {self.log_dir / f'{name}.{self.starts}.log'}"
                    )
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what} (logs in {self.log_dir})")
            time.sleep(0.5)

    @property
    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.webserver_port, timeout=30)

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        return self.client._execute(query, variables or {})  # noqa: SLF001 - the raw query

    def daemons_healthy(self) -> bool:
        try:
            statuses = self.graphql(DAEMON_HEALTH_QUERY)["instance"]["daemonHealth"][
                "allDaemonStatuses"
            ]
        except Exception:  # noqa: BLE001 - not up yet
            return False
        required = [s for s in statuses if s["required"]]
        return bool(required) and all(s["healthy"] for s in required)

    def runs(self, tags: dict[str, str] | None = None, limit: int = 500) -> list[dict]:
        """Runs as the webserver reports them, newest first, with tags as a dict."""
        run_filter = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        reply = self.graphql(RUNS_QUERY, {"filter": run_filter, "limit": limit})["runsOrError"]
        if reply["__typename"] != "Runs":
            raise RuntimeError(f"runsOrError: {reply}")
        return [
            {**run, "tags": {t["key"]: t["value"] for t in run["tags"]}} for run in reply["results"]
        ]

    def run_status(self, run_id: str) -> str:
        return self.client.get_run_status(run_id).value

    # stopping
    def alive(self) -> bool:
        return self.pgid is not None and group_alive(self.pgid)

    def send(self, sig: int) -> None:
        """Send `sig` to every process of the stack at once, as a terminal's Ctrl-C does."""
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, sig)

    def wait_gone(self, timeout: float) -> bool:
        """Wait for every process of the stack to have ended (a zombie PID 1 has yet to reap
        counts as ended); whether they did within `timeout`."""
        if self.pgid is None:
            return True

        def reap() -> None:  # the direct children, so they stop counting as alive
            for process in self.processes.values():
                process.poll()

        return wait_group_gone(self.pgid, timeout, reap=reap, interval=0.2)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        """Stop the whole process group: `sig`, then SIGKILL for whatever outlives `timeout`."""
        if self.pgid is None:
            return
        self.send(sig)
        if not self.wait_gone(timeout):
            self.send(signal.SIGKILL)
            self.wait_gone(10)
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)

    def summary(self) -> str:
        """Runs by status, and why those that did not succeed ended, for a failure message."""
        try:
            runs = self.runs()
        except Exception as exc:  # noqa: BLE001 - the webserver may be what is down
            return f"(runs not readable: {exc})"
        counts: dict[str, int] = {}
        for run in runs:
            counts[run["status"]] = counts.get(run["status"], 0) + 1
        lines = [f"runs by status: {counts}"]
        for run in runs:
            if run["status"] != "SUCCESS":
                retry = {k: v for k, v in run["tags"].items() if "retry" in k or "parent" in k}
                lines.append(f"  {run['runId']} {run['jobName']} {run['status']} {retry}")
        return "\n".join(lines)

    def logs(self) -> str:
        return (
            self.summary()
            + "\n"
            + "\n".join(
                f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
                for path in sorted(self.log_dir.glob("*.log"))
            )
        )


def stack_env(
    home: Path,
    *,
    redis_url: str,
    key_prefix: str,
    stripe_url: str,
    smtp_port: int,
    postgres_url: str | None = None,
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAGSTER_", "STRIPE_", "SMTP_", "WEBHOOK_", "PYTEST_"))
    }
    env.update(
        DAGSTER_HOME=str(home),
        REDIS_URL=redis_url,
        QUEUE_KEY_PREFIX=key_prefix,
        STRIPE_API_BASE=stripe_url,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp_port),
        SMTP_SECURITY="none",
        PYTHONUNBUFFERED="1",
    )
    if postgres_url:
        env["DAGSTER_POSTGRES_URL"] = postgres_url
    return env


@contextlib.contextmanager
def dagster_stack(
    base: Path,
    *,
    redis_url: str,
    key_prefix: str,
    stripe_url: str,
    smtp_port: int,
    postgres_url: str | None = None,
    overrides: dict | None = None,
    start: bool = True,
) -> Iterator[DagsterStack]:
    """A stack over a fresh DAGSTER_HOME under `base`; always torn down with its group."""
    home = base / f"dagster-home-{uuid.uuid4().hex[:8]}"
    log_dir = base / "stack-logs"
    home.mkdir(parents=True)
    log_dir.mkdir(exist_ok=True)
    config = instance_config(postgres_url=postgres_url, overrides=overrides)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = stack_env(
        home,
        redis_url=redis_url,
        key_prefix=key_prefix,
        stripe_url=stripe_url,
        smtp_port=smtp_port,
        postgres_url=postgres_url,
    )
    stack = DagsterStack(home=home, env=env, log_dir=log_dir)
    try:
        if start:
            stack.start()
        yield stack
    finally:
        stack.stop()


def wait_until(predicate, timeout: float, what: str, interval: float = 1.0, stack=None):
    """Poll `predicate` until it returns something truthy; fail naming `what` (with the stack's
    logs when given) after `timeout`. Timeouts bound the test, they are not what it asserts."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{stack.logs()}" if stack is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)
