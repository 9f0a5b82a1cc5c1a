"""The local Dagster stack, as `make run` (sandbox/dev.py), the stack tests
(tests/support/dagster_stack.py) and the bench (bench/e2e.py) start it: one code server
(`queue_pipelines.warm_code_server`, whose forkserver forks the run workers), `dagster-daemon
run` and `dagster-webserver` over a DAGSTER_HOME holding the workspace file and the instance's
dagster.yaml.

`make run` starts each process in a process group of its own, on fixed ports, so that its
supervisor can restart one alone. The tests and the bench start a `DagsterGroup`: every
process, and the run workers they fork, in the code server's group, on free ports, so that one
signal to the group reaches the whole stack, as Ctrl-C in a terminal does, and a stop leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from queue_pipelines.sandbox.processes import group_alive, wait_group_gone
from queue_pipelines.sandbox.servers import free_port, refuse_taken_port, wait_for_port
from queue_pipelines.settings import TYPE_SUFFIX, variable_name

# queue_pipelines/sandbox/stack.py -> the project (dagster.yaml)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION_NAME = "queue_pipelines"

# Every intake sensor evaluation holds one of the code server's threads while it listens for
# new requests (up to 4 s, sensors/intake.py). Dagster's default pool (cores + 4 threads)
# would leave a 2-core machine one thread for run launches and the UI; these threads mostly
# wait on Redis and cost nothing while they do. deploy/helm/values.yaml passes the same.
CODE_SERVER_MAX_WORKERS = 16
START_TIMEOUT_SECONDS = 180

# Variables of the caller's environment that would point an isolated stack (tests, bench) at
# services or an instance other than the ones it was given.
NOT_INHERITED_PREFIXES = ("DAGSTER_", "STRIPE_", "SMTP_", "WEBHOOK_", "PYTEST_")
NOT_INHERITED = (variable_name("solana_rpc_url"),)


# --- what each process runs --------------------------------------------------------------


def code_server_command(port: int) -> list[str]:
    # Dagster's own `dagster api grpc`, run as a module (RUN_START 1.95 s after launch against
    # 2.35 s through the `dagster` script) with its run workers forked from a forkserver that
    # has the code location imported (0.51 s; queue_pipelines/warm_code_server.py; issue 18).
    return [
        sys.executable, "-m", "queue_pipelines.warm_code_server", "api", "grpc",
        "--module-name", "queue_pipelines.definitions",
        "--location-name", LOCATION_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-workers", str(CODE_SERVER_MAX_WORKERS),
    ]  # fmt: skip


def daemon_command(workspace: Path, log_level: str | None = None) -> list[str]:
    argv = [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)]
    return argv + ["--log-level", log_level] if log_level else argv


def webserver_command(workspace: Path, port: int, log_level: str | None = None) -> list[str]:
    argv = [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1"]
    argv += ["-p", str(port)]
    return argv + ["--dagster-log-level", log_level] if log_level else argv


# --- what DAGSTER_HOME holds ---------------------------------------------------------------


def write_workspace(home: Path, code_server_port: int) -> Path:
    """The workspace file the daemon and the webserver load the code server from."""
    workspace = home / "workspace.yaml"
    server = {"host": "127.0.0.1", "port": code_server_port, "location_name": LOCATION_NAME}
    workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": server}]}))
    return workspace


def instance_config(*, postgres_url: str | None = None, overrides: dict | None = None) -> dict:
    """The project's dagster.yaml, on SQLite under DAGSTER_HOME or on dagster-postgres at
    `postgres_url`, with `overrides` merged in (a mapping into a mapping, key by key)."""
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    if postgres_url:
        for key in ("storage", "run_storage", "event_log_storage", "schedule_storage"):
            config.pop(key, None)
        config["storage"] = {"postgres": {"postgres_url": postgres_url}}
    return _merged(config, overrides or {})


def _merged(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merged(base[key], value)
        else:
            merged[key] = value
    return merged


def write_instance_config(
    home: Path, *, postgres_url: str | None = None, overrides: dict | None = None
) -> dict:
    """DAGSTER_HOME's dagster.yaml, written fresh; returns the config written. Unchanged, the
    project's file is copied as it is, its comments with it, for the person who opens it."""
    if not postgres_url and not overrides:
        shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
        return instance_config()
    config = instance_config(postgres_url=postgres_url, overrides=overrides)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return config


# --- the environment its processes get ----------------------------------------------------

# Dagster's telemetry upload thread (in the daemon and the webserver) ignores dagster.yaml's
# `telemetry: enabled: false` and takes $DAGSTER_HOME/logs for its own: it renames the
# directory away to upload it, and with several such threads racing, deletes it, so the logs
# of `make run`'s parts went, and a restarted Redis found no directory for its log and could
# not start. Only this variable stops the thread.
NO_TELEMETRY = {"DAGSTER_DISABLE_TELEMETRY": "1"}


def caller_env(home: Path) -> dict[str, str]:
    """`make run`'s: the caller's environment (their REDIS_URL, STRIPE_SECRET_KEY ... choose
    the services), over the instance in `home`."""
    return {**NO_TELEMETRY, **os.environ, variable_name("dagster_home"): str(home)}


def isolated_env(
    home: Path,
    *,
    redis_url: str,
    key_prefix: str,
    stripe_url: str,
    smtp_port: int,
    postgres_url: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The tests' and the bench's: the services given here and nothing of the caller's
    Dagster, Stripe, SMTP, webhook or Solana settings; `extra` on top."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(NOT_INHERITED_PREFIXES) and name not in NOT_INHERITED
    }
    env.update(NO_TELEMETRY)
    env[variable_name("dagster_home")] = str(home)
    env[variable_name("redis_url")] = redis_url
    env[variable_name("queue_key_prefix")] = key_prefix
    env[variable_name("stripe_api_base")] = stripe_url
    env[variable_name("smtp_host")] = "127.0.0.1"
    env[variable_name("smtp_port")] = str(smtp_port)
    env[variable_name("smtp_security")] = "none"
    env["PYTHONUNBUFFERED"] = "1"
    if postgres_url:
        env[variable_name("dagster_postgres_url")] = postgres_url
    env.update(extra or {})
    return env


def per_type_variable(field_name: str, job_type: str) -> str:
    """A per-type setting's variable for one type: QP_BATCH_SIZE_PAYMENT."""
    return variable_name(field_name).removesuffix(TYPE_SUFFIX) + f"_{job_type.upper()}"


# --- starting them -------------------------------------------------------------------------


def spawn(argv: list[str], home: Path, env: dict[str, str], log: Path, group: int = 0):
    """`argv` in `home`, its output appended to `log`, in process group `group` (0: a new one
    it leads)."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            argv, env=env, cwd=home, stdout=output, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, process_group=group,
        )  # fmt: skip


def start_code_server(
    port: int, home: Path, env: dict[str, str], log: Path, *, group: int = 0,
    timeout: float = START_TIMEOUT_SECONDS,
) -> subprocess.Popen:  # fmt: skip
    """The code location, served once for the daemon and the webserver; the run workers of
    the default run launcher are its descendants (through its forkserver), in its group."""
    refuse_taken_port(port, "the Dagster code server")
    process = spawn(code_server_command(port), home, env, log, group)
    wait_for_port(port, process, "the Dagster code server", timeout=timeout)
    return process


def start_daemon(
    workspace: Path, home: Path, env: dict[str, str], log: Path, *, group: int = 0,
    log_level: str | None = None,
) -> subprocess.Popen:  # fmt: skip
    return spawn(daemon_command(workspace, log_level), home, env, log, group)


def start_webserver(
    workspace: Path, port: int, home: Path, env: dict[str, str], log: Path, *, group: int = 0,
    log_level: str | None = None, timeout: float = START_TIMEOUT_SECONDS,
) -> subprocess.Popen:  # fmt: skip
    refuse_taken_port(port, "the Dagster UI")
    process = spawn(webserver_command(workspace, port, log_level), home, env, log, group)
    wait_for_port(port, process, "the Dagster UI", timeout=timeout)
    return process


@dataclass
class DagsterGroup:
    """Code server, daemon and (with `webserver`) webserver on free ports, all in the code
    server's process group, with their output in `log_dir/<name>.<start>.log`."""

    home: Path
    env: dict[str, str]
    log_dir: Path
    webserver: bool = True
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    code_server_port: int = 0
    webserver_port: int = 0
    starts: int = 0

    @property
    def pgid(self) -> int | None:
        leader = self.processes.get("code-server")
        return leader.pid if leader is not None else None

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.{self.starts}.log"

    def start(self, timeout: float = 600) -> DagsterGroup:
        """Start the processes; return once the code server and the webserver listen."""
        self.starts += 1
        self.processes = {}
        self.code_server_port = free_port()
        workspace = write_workspace(self.home, self.code_server_port)
        deadline = time.monotonic() + timeout
        with self._naming_the_log("code-server"):
            # The code server first: it leads the process group that everything else joins.
            self.processes["code-server"] = start_code_server(
                self.code_server_port, self.home, self.env, self.log("code-server"),
                timeout=deadline - time.monotonic(),
            )  # fmt: skip
        self.processes["daemon"] = start_daemon(
            workspace, self.home, self.env, self.log("daemon"), group=self.pgid
        )
        if self.webserver:
            self.webserver_port = free_port()
            with self._naming_the_log("webserver"):
                self.processes["webserver"] = start_webserver(
                    workspace, self.webserver_port, self.home, self.env, self.log("webserver"),
                    group=self.pgid, timeout=max(1.0, deadline - time.monotonic()),
                )  # fmt: skip
        return self

    @contextlib.contextmanager
    def _naming_the_log(self, name: str):
        try:
            yield
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; log: {self.log(name)}") from exc

    def wait(self, ready, what: str, deadline: float) -> None:
        """Until `ready()`; fails when a process of the stack exits or `deadline` passes."""
        while not ready():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with code {process.returncode} while waiting for {what}; "
                        f"log: {self.log(name)}"
                    )
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what} (logs in {self.log_dir})")
            time.sleep(0.5)

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
