"""A real Dagster deployment for integration tests: code server, `dagster-daemon run` and
`dagster-webserver`, each a subprocess of one process group, over a DAGSTER_HOME of the test's,
started as `make run` and the bench start them (queue_pipelines/sandbox/stack.py), with what a
test reads through GraphQL on top.

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
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from dagster_graphql import DagsterGraphQLClient

from queue_pipelines.sandbox.stack import DagsterGroup, isolated_env, write_instance_config

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


class DagsterStack(DagsterGroup):
    def start(self, timeout: float = 600) -> DagsterStack:
        """Start code server, daemon and webserver; return once the webserver answers and
        every required daemon has a healthy heartbeat."""
        deadline = time.monotonic() + timeout
        super().start(timeout)
        self.wait(self.daemons_healthy, "healthy daemon heartbeats", deadline)
        return self

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
    write_instance_config(home, postgres_url=postgres_url, overrides=overrides)
    env = isolated_env(
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
