"""Run workers of a real stack come from the code server's forkserver, with the code location
preloaded (queue_pipelines/warm_code_server.py), and behave as spawned ones did: a run
terminated from the UI ends CANCELED, a worker killed by SIGKILL fails its run, and Ctrl-C
of the stack (SIGINT to its process group) ends every process, the forkserver included.

Stripe here is a server that accepts connections and never answers, so each run stays in its
first Stripe call (a 30-s timeout, retried) for as long as the test needs it started."""

from __future__ import annotations

import os
import re
import signal
import socket
import uuid
from pathlib import Path

import pytest

from queue_pipelines.sandbox.processes import GONE_STATES, PROC, stat_fields
from tests.support.dagster_stack import dagster_stack, wait_until
from tests.support.stack_checks import enqueue_payments

pytestmark = pytest.mark.stack

FORKSERVER = "from multiprocessing.forkserver import main"


@pytest.fixture
def silent_stripe():
    """A listening socket nobody accepts from: connections open, requests never answered."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def running_members(pgid: int) -> dict[int, tuple[int, str]]:
    """The running processes of group `pgid`: pid -> (parent pid, command line)."""
    members = {}
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            fields = stat_fields(stat)
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in GONE_STATES:
            members[int(stat.parent.name)] = (int(fields[1]), cmdline)
    return members


def forkserver_of(stack) -> int:
    servers = [
        pid
        for pid, (parent, cmdline) in running_members(stack.pgid).items()
        if FORKSERVER in cmdline and parent == stack.pgid
    ]
    assert len(servers) == 1, running_members(stack.pgid)
    return servers[0]


def started_run(stack, tenant: str) -> str:
    def started():
        runs = stack.runs({"queue/tenant": tenant})
        return runs and runs[0]["status"] == "STARTED" and runs[0]["runId"]

    return wait_until(started, 300, f"a run of {tenant} to start", interval=1, stack=stack)


RUN_MESSAGES_QUERY = """
query RunMessages($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection { events { ... on MessageEvent { message } } }
  }
}
"""


def worker_of(stack, run_id: str, forkserver: int) -> int:
    """The run's worker, by the pid its start reported ("Started process for run (pid: N)");
    asserted to be a child of the forkserver."""

    def reported_pid():
        reply = stack.graphql(RUN_MESSAGES_QUERY, {"runId": run_id})["logsForRun"]
        for event in reply.get("events", []):
            found = re.search(r"Started process for run \(pid: (\d+)\)", event.get("message", ""))
            if found:
                return int(found.group(1))
        return None

    pid = wait_until(reported_pid, 60, f"run {run_id}'s worker pid", interval=0.5, stack=stack)
    assert running_members(stack.pgid)[pid][0] == forkserver, running_members(stack.pgid)
    return pid


def gone(pid: int) -> bool:
    try:
        return stat_fields(PROC / str(pid) / "stat")[0] in GONE_STATES
    except OSError:
        return True


def test_run_workers_fork_from_the_preloaded_forkserver_and_stop_as_before(
    tmp_path, redis_url, key_prefix, silent_stripe, mail_sink
):
    with dagster_stack(
        tmp_path,
        redis_url=redis_url,
        key_prefix=key_prefix,
        stripe_url=silent_stripe,
        smtp_port=mail_sink.port,
    ) as stack:
        log = Path(stack.log_dir / "code-server.1.log").read_text()
        assert "queue_pipelines.warm_code_server" in " ".join(stack.processes["code-server"].args)
        assert "run workers: forked from a forkserver with queue_pipelines.definitions" in log
        forkserver = forkserver_of(stack)
        assert "queue_pipelines.definitions" in running_members(stack.pgid)[forkserver][1]

        # Terminate, as the UI's button does (the same GraphQL mutation).
        canceled = f"tenant-{uuid.uuid4().hex[:10]}"
        enqueue_payments(redis_url, key_prefix, canceled, [f"terminate-{uuid.uuid4().hex[:6]}"])
        run_id = started_run(stack, canceled)
        worker = worker_of(stack, run_id, forkserver)
        stack.client.terminate_run(run_id)
        wait_until(
            lambda: stack.run_status(run_id) == "CANCELED", 240, "the run CANCELED", stack=stack
        )
        wait_until(lambda: gone(worker), 60, "the terminated run's worker to end", stack=stack)

        # SIGKILL of the worker: the code server sees its child gone and fails the run.
        killed = f"tenant-{uuid.uuid4().hex[:10]}"
        enqueue_payments(redis_url, key_prefix, killed, [f"sigkill-{uuid.uuid4().hex[:6]}"])
        run_id = started_run(stack, killed)
        worker = worker_of(stack, run_id, forkserver)
        os.kill(worker, signal.SIGKILL)
        wait_until(
            lambda: stack.run_status(run_id) == "FAILURE",
            240,
            "the killed run FAILURE",
            stack=stack,
        )
        # The forkserver outlives its child and serves the next run (run_retries' relaunch).
        assert not gone(forkserver)

        # Ctrl-C of the stack: SIGINT to the whole group ends every process in it.
        stack.send(signal.SIGINT)
        assert stack.wait_gone(120), running_members(stack.pgid)
