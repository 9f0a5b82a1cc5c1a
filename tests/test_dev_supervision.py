"""`make run` supervises its parts: a dead child is restarted with a log line, one that keeps
dying stops the stack with a reason and no process left, and Ctrl-C exits 0 leaving nothing.

The supervisor's policy is tested on plain processes (a shell that leaves a grandchild in its
group, as a code server leaves run workers); the whole `queue-pipelines dev` on its embedded
defaults (their fixed ports): with its Redis and daemon killed and then Ctrl-C, and (a
restart drill) with its Redis killed by SIGKILL in the middle of a burst of payments.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from dagster_graphql import DagsterGraphQLClient

from queue_pipelines.sandbox import defaults
from queue_pipelines.sandbox.processes import group_alive, started_at, wait_group_gone
from queue_pipelines.sandbox.servers import free_port, port_open
from queue_pipelines.sandbox.supervisor import Child, StackStopped, Supervisor, end_leftovers
from resources import RedisResource
from tests.support.dagster_stack import RUNS_QUERY, wait_until
from tests.support.stack_checks import (
    charges_by_key,
    enqueue_payments,
    intake_left,
    outcomes_by_key,
)

IN_PROGRESS = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}


# A stand-in for a run worker: it ends on SIGINT, as a run worker does, and says "started"
# once it does. (A `sleep` started with `&` would not: a non-interactive shell starts its
# background jobs with SIGINT ignored, and the stop under test would be the 30-s SIGKILL
# fallback, not the path `make run` takes.)
RUN_WORKER = (
    f"{sys.executable} -c 'import signal, time; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    'print("started", flush=True); time.sleep(300)\''
)
SHELL_WITH_WORKER = f"{RUN_WORKER} & wait"


def gone(pgid: int) -> bool:
    """Whether process group `pgid` ends within 10 s (its zombies, which PID 1 may reap
    seconds later, count as ended)."""
    return wait_group_gone(pgid, timeout=10)


def shell_with_grandchild(log: Path) -> subprocess.Popen:
    # The shell's child stays in its group, like a code server's run worker; the shell says
    # when it has started it.
    process = subprocess.Popen(
        ["sh", "-c", SHELL_WITH_WORKER], process_group=0,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout.readline().strip() == b"started"
    return process


def test_a_dead_child_is_restarted_and_its_group_ended(tmp_path, capsys):
    supervisor = Supervisor(tmp_path, max_restarts=2)
    supervisor.add(
        Child(
            "worker",
            lambda: shell_with_grandchild(tmp_path / "w.log"),
            tmp_path,
            stop_signal=signal.SIGINT,  # as the code server, whose run workers end on SIGINT
        )
    )
    first = supervisor.children["worker"].process
    try:
        os.kill(first.pid, signal.SIGKILL)  # the leader dies; its grandchild lives on
        first.wait()
        assert group_alive(first.pid)

        supervisor.watch(
            poll_seconds=0.05, until=lambda: supervisor.children["worker"].process is not first
        )

        assert gone(first.pid)  # the orphan went with it
        second = supervisor.children["worker"].process
        assert second.poll() is None
        assert json.loads((tmp_path / "dev-children.json").read_text()) == {"worker": second.pid}
        said = capsys.readouterr().out
        assert "dev: worker exited with code -9; restarting it (1/2" in said
        assert "did not stop" not in said  # the orphan ended on SIGINT, as a run worker does
    finally:
        supervisor.stop_all()
    assert gone(supervisor.children["worker"].process.pid)
    # The group ended on SIGINT, as `make run`'s code server and its run workers do, not by
    # the SIGKILL that follows a stop's grace period.
    assert "did not stop" not in capsys.readouterr().out


def test_a_zombie_counts_as_gone_where_killpg_still_finds_it():
    # A killed child that nobody has reaped yet: what an orphan is until PID 1 reaps it.
    process = subprocess.Popen(["sleep", "300"], process_group=0)
    try:
        assert group_alive(process.pid)
        os.kill(process.pid, signal.SIGKILL)
        assert wait_group_gone(process.pid, timeout=10)
        os.killpg(process.pid, 0)  # still in the process table: no ProcessLookupError
        assert started_at(process.pid) is None
    finally:
        process.wait()
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)


def test_a_child_that_keeps_dying_stops_the_stack_with_its_reason(tmp_path, capsys):
    supervisor = Supervisor(tmp_path, max_restarts=1)
    supervisor.add(
        Child(
            "steady",
            lambda: shell_with_grandchild(tmp_path / "s.log"),
            tmp_path,
            stop_signal=signal.SIGINT,
        )
    )
    supervisor.add(
        Child(
            "flaky",
            lambda: subprocess.Popen(["sh", "-c", "exit 3"], process_group=0),
            tmp_path / "f.log",
        )
    )
    steady = supervisor.children["steady"].process
    with pytest.raises(StackStopped, match=r"flaky exited \(code 3\) 2 times within 300 s"):
        supervisor.watch(poll_seconds=0.05)
    supervisor.stop_all()
    assert gone(steady.pid)
    assert "did not stop" not in capsys.readouterr().out
    assert not (tmp_path / "dev-children.json").exists()


DEV_PORTS = {
    "embedded Redis": defaults.EMBEDDED_REDIS_PORT,
    "Stripe sandbox": defaults.SANDBOX_STRIPE_PORT,
    "SMTP sink": defaults.SMTP_SINK_PORT,
    "Solana ledger": defaults.EMBEDDED_SOLANA_PORT,
    "gateway": defaults.GATEWAY_PORT,
    "code server": defaults.CODE_SERVER_PORT,
}
CHILDREN = {
    "redis",
    "stripe-sandbox",
    "solana-ledger",
    "gateway",
    "code-server",
    "daemon",
    "webserver",
}


ABANDONED_SUPERVISOR = """
import subprocess, sys, time
from pathlib import Path
from queue_pipelines.sandbox.supervisor import Child, Supervisor

def part():
    process = subprocess.Popen(["sh", "-c", sys.argv[2]], process_group=0, stdout=subprocess.PIPE)
    process.stdout.readline()
    return process

Supervisor(Path(sys.argv[1])).add(Child("worker", part, Path(sys.argv[1])))
print("ready", flush=True)
time.sleep(300)
"""


def test_parts_left_running_by_a_killed_make_run_are_ended_at_the_next_start(tmp_path, capsys):
    # An earlier start's supervisor is killed by SIGKILL: nothing stops its part, whose
    # grandchild (as a code server's run worker) lives on too.
    supervisor = subprocess.Popen(
        [sys.executable, "-c", ABANDONED_SUPERVISOR, str(tmp_path), SHELL_WITH_WORKER],
        stdout=subprocess.PIPE,
    )
    assert supervisor.stdout.readline().strip() == b"ready"
    record = tmp_path / "dev-children.json"
    part = json.loads(record.read_text())["worker"]
    supervisor.kill()
    supervisor.wait()
    assert group_alive(part)
    # A pid on the record that some process took after the record was written: not ours.
    # (Start times are known to the second: the stranger starts 3 s after the part.)
    time.sleep(3)
    stranger = subprocess.Popen(["sleep", "300"], process_group=0)
    record.write_text(json.dumps({"worker": part, "gone": stranger.pid}))
    written = time.time() - 2  # after the part started, before the stranger did
    os.utime(record, (written, written))
    try:
        end_leftovers(tmp_path)

        assert gone(part)
        assert stranger.poll() is None
        assert not record.exists()
        said = capsys.readouterr().out
        assert f"dev: worker (pid {part}) was left running by a make run" in said
        assert "gone" not in said
    finally:
        for pgid in (part, stranger.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        stranger.wait()


@dataclass
class DevStack:
    """A running `queue-pipelines dev` on its embedded defaults, and what it said."""

    process: subprocess.Popen
    home: Path
    output: Path
    ui_port: int
    seen: set[int] = field(default_factory=set)  # process groups of its children, ever
    leftover: list[int] = field(default_factory=list)  # of those, alive once it was stopped

    def children(self) -> dict[str, int]:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads((self.home / "dev-children.json").read_text())
        return {}

    def out(self) -> str:
        return self.output.read_text(errors="replace")

    def kill_child(self, name: str, ready=lambda: True) -> None:
        """SIGKILL one child; return once the supervisor has started another and `ready()`."""
        old = self.children()[name]
        os.kill(old, signal.SIGKILL)
        wait_until(
            lambda: self.children().get(name) not in (None, old) and ready(),
            120,
            f"{name} to be restarted\n{self.out()}",
        )
        self.seen |= set(self.children().values())
        assert f"dev: {name} exited with code -9; restarting it" in self.out()


@contextlib.contextmanager
def dev_stack(tmp_path: Path, env_overrides: dict[str, str] | None = None):
    """`queue-pipelines dev` as a process group of its own, up with every child; on the way
    out, whatever of it is left is killed and `leftover` lists the groups that outlived it."""

    def taken_ports() -> list[str]:
        return [name for name, port in DEV_PORTS.items() if port_open(port)]

    # A stack stopped just before (the previous test's) may still be letting go of its ports.
    deadline = time.monotonic() + 30
    while (taken := taken_ports()) and time.monotonic() < deadline:
        time.sleep(0.5)
    if taken:
        message = f"ports of `make run` are taken ({', '.join(taken)}): is a `make run` going?"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "STRIPE_", "SMTP_", "SOLANA_", "DAGSTER_", "QP_"))
    }
    env["DAGSTER_HOME"] = str(home)
    env.update(env_overrides or {})
    output = tmp_path / "dev.out"
    ui_port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "queue_pipelines.cli", "dev", "--port", str(ui_port)],
        env=env, cwd=tmp_path, stdout=output.open("wb"), stderr=subprocess.STDOUT,
        process_group=0,
    )  # fmt: skip
    dev = DevStack(process, home, output, ui_port)
    try:
        wait_until(
            lambda: set(dev.children()) == CHILDREN and port_open(ui_port), 400,
            "every part of `make run` to be up",
        )  # fmt: skip
        dev.seen |= set(dev.children().values())
        yield dev
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        dev.leftover = [pid for pid in dev.seen if not gone(pid)]
        for pid in dev.leftover:
            os.killpg(pid, signal.SIGKILL)


@pytest.mark.stack
def test_make_run_restarts_a_killed_redis_and_daemon_and_ctrl_c_leaves_nothing(tmp_path):
    with dev_stack(tmp_path) as dev:
        dev.kill_child("redis", lambda: port_open(defaults.EMBEDDED_REDIS_PORT))
        dev.kill_child("daemon")
        assert dev.process.poll() is None

        os.killpg(dev.process.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        assert dev.process.wait(timeout=180) == 0, dev.out()
    assert dev.leftover == [], f"process groups left behind: {dev.leftover}\n{dev.out()}"
    assert "dev: stopping (Ctrl-C)" in dev.out()
    assert not any(port_open(port) for port in DEV_PORTS.values())


def in_progress_runs(ui_port: int) -> list[dict]:
    reply = DagsterGraphQLClient("127.0.0.1", port_number=ui_port, timeout=30)._execute(  # noqa: SLF001
        RUNS_QUERY, {"filter": {"statuses": sorted(IN_PROGRESS)}, "limit": 100}
    )["runsOrError"]
    assert reply["__typename"] == "Runs", reply
    return reply["results"]


def burst_through_a_redis_fault(tmp_path: Path, fault) -> None:
    """30 payments (6 runs of 5) through `make run`; once the first of them are settled and
    the rest are not, `fault(dev)` befalls its embedded Redis. Then: every payment charged
    exactly once, none dead-lettered, the intake drained."""
    tenant = f"redis-fault-{uuid.uuid4().hex[:8]}"
    keys = [f"burst-{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(30)]
    redis_url, prefix = defaults.EMBEDDED_REDIS_URL, "qp"
    with dev_stack(tmp_path, {"QP_BATCH_SIZE_PAYMENT": "5"}) as dev:
        intake = RedisResource(url=redis_url, key_prefix=prefix).intake()
        enqueue_payments(redis_url, prefix, tenant, keys)
        before_fault = wait_until(
            lambda: 0 < len(settled := outcomes_by_key(intake, "payment", tenant, keys)) < 30
            and settled,
            600, f"the first payments of the burst to be settled\n{dev.out()}", interval=0.2,
        )  # fmt: skip
        print(f"Redis fault with {len(before_fault)} of {len(keys)} payments settled")
        fault(dev)

        def drained() -> bool:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                return (
                    len(outcomes_by_key(intake, "payment", tenant, keys)) == len(keys)
                    and intake_left(intake, "payment") == (0, 0)
                    and not in_progress_runs(dev.ui_port)
                )
            return False

        wait_until(drained, 900, f"the burst to drain\n{dev.out()}", interval=2)
        outcomes = outcomes_by_key(intake, "payment", tenant, keys)
        dead = intake.dead_letters()
        charges = charges_by_key(defaults.SANDBOX_STRIPE_URL, tenant)

    assert len(before_fault) < len(keys)  # the fault came with requests still unsettled
    assert all(o.succeeded for o in outcomes.values()), outcomes
    assert dead == [], [d["reason"] for d in dead]
    assert charges == {key: 1 for key in keys}


@pytest.mark.stack
@pytest.mark.restarts
def test_make_run_loses_no_payment_when_its_redis_is_killed_mid_burst(tmp_path):
    """The embedded Redis is killed by SIGKILL and restarted by the supervisor from its
    append-only file (fsync on every write). Without persistence the restarted Redis would
    come back empty, and the unsettled requests with their streams, batches and outcomes
    would be gone."""
    burst_through_a_redis_fault(
        tmp_path,
        lambda dev: dev.kill_child("redis", lambda: port_open(defaults.EMBEDDED_REDIS_PORT)),
    )


@pytest.mark.stack
@pytest.mark.restarts
def test_make_run_loses_and_repeats_no_payment_when_its_redis_is_unreachable_for_10_s(tmp_path):
    """The embedded Redis stops answering for 12 s (SIGSTOP, then SIGCONT): every client's
    10-s socket timeout fires mid-call, the breaker's bookkeeping after Stripe answered
    included. Nothing is charged twice; what could not be settled is settled later."""

    def unreachable(dev: DevStack) -> None:
        pid = dev.children()["redis"]
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(12)
        finally:
            os.kill(pid, signal.SIGCONT)

    burst_through_a_redis_fault(tmp_path, unreachable)
