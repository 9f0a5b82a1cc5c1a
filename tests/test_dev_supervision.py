"""`make run` supervises its parts: a dead child is restarted with a log line, one that keeps
dying stops the stack with a reason and no process left, and Ctrl-C exits 0 leaving nothing.

The supervisor's policy is tested on plain processes (a shell that leaves a grandchild in its
group, as a code server leaves run workers); the whole `queue-pipelines dev` once, on its
embedded defaults (their fixed ports), with its Redis and daemon killed and then Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from queue_pipelines.sandbox import defaults
from queue_pipelines.sandbox.dev import Child, StackStopped, Supervisor
from queue_pipelines.sandbox.servers import free_port, port_open
from tests.support.dagster_stack import wait_until


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def shell_with_grandchild(log: Path) -> subprocess.Popen:
    # The shell's child stays in its group, like a code server's run worker; the shell says
    # when it has started it.
    process = subprocess.Popen(
        ["sh", "-c", "sleep 300 & echo started; wait"], process_group=0,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout.readline().strip() == b"started"
    return process


def test_a_dead_child_is_restarted_and_its_group_ended(tmp_path, capsys):
    supervisor = Supervisor(tmp_path, max_restarts=2)
    supervisor.add(Child("worker", lambda: shell_with_grandchild(tmp_path / "w.log"), tmp_path))
    first = supervisor.children["worker"].process
    try:
        os.kill(first.pid, signal.SIGKILL)  # the leader dies; its grandchild lives on
        first.wait()
        assert group_alive(first.pid)

        supervisor.watch(
            poll_seconds=0.05, until=lambda: supervisor.children["worker"].process is not first
        )

        assert not group_alive(first.pid)  # the orphan went with it
        second = supervisor.children["worker"].process
        assert second.poll() is None
        assert json.loads((tmp_path / "dev-children.json").read_text()) == {"worker": second.pid}
        assert "dev: worker exited with code -9; restarting it (1/2" in capsys.readouterr().out
    finally:
        supervisor.stop_all()
    assert not group_alive(supervisor.children["worker"].process.pid)


def test_a_child_that_keeps_dying_stops_the_stack_with_its_reason(tmp_path):
    supervisor = Supervisor(tmp_path, max_restarts=1)
    supervisor.add(Child("steady", lambda: shell_with_grandchild(tmp_path / "s.log"), tmp_path))
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
    assert not group_alive(steady.pid)
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


@pytest.mark.stack
def test_make_run_restarts_a_killed_redis_and_daemon_and_ctrl_c_leaves_nothing(tmp_path):
    taken = [name for name, port in DEV_PORTS.items() if port_open(port)]
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
    output = tmp_path / "dev.out"
    ui_port = free_port()
    dev = subprocess.Popen(
        [sys.executable, "-m", "queue_pipelines.cli", "dev", "--port", str(ui_port)],
        env=env, cwd=tmp_path, stdout=output.open("wb"), stderr=subprocess.STDOUT,
        process_group=0,
    )  # fmt: skip
    pids_file = home / "dev-children.json"

    def children() -> dict[str, int]:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads(pids_file.read_text())
        return {}

    def out() -> str:
        return output.read_text(errors="replace")

    seen: set[int] = set()
    try:
        wait_until(
            lambda: set(children()) == CHILDREN and port_open(ui_port), 400,
            "every part of `make run` to be up",
        )  # fmt: skip
        seen |= set(children().values())

        for name, check in (
            ("redis", lambda: port_open(defaults.EMBEDDED_REDIS_PORT)),
            ("daemon", lambda: True),
        ):
            old = children()[name]
            os.kill(old, signal.SIGKILL)
            wait_until(
                lambda old=old, name=name, check=check: (
                    children().get(name) not in (None, old) and check()
                ),
                120,
                f"{name} to be restarted\n{out()}",
            )
            seen |= set(children().values())
            assert f"dev: {name} exited with code -9; restarting it" in out()
        assert dev.poll() is None

        os.killpg(dev.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        assert dev.wait(timeout=180) == 0, out()
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
        leftover = [pid for pid in seen if group_alive(pid)]
        for pid in leftover:
            os.killpg(pid, signal.SIGKILL)
    assert leftover == [], f"process groups left behind: {leftover}\n{out()}"
    assert "dev: stopping (Ctrl-C)" in out()
    assert not any(port_open(port) for port in DEV_PORTS.values())
