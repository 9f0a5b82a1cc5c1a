"""The supervisor of `make run`: every part a child process leading a process group of its
own. A child that dies is restarted with a log line (its dependents with it); one that keeps
dying (more than QP_DEV_MAX_RESTARTS times within RESTART_WINDOW_SECONDS) stops the whole
stack with a one-line reason; a stop ends each group, last started first; the parts an earlier `make run` left
running when it was killed outright are ended at the next start (CHILDREN_FILE).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from queue_pipelines.sandbox.processes import own_group_leaders, started_at, wait_group_gone
from queue_pipelines.settings import load

RESTART_WINDOW_SECONDS = 300
STOP_GRACE_SECONDS = 30
CHILDREN_FILE = "dev-children.json"  # {part: pid}; each pid leads a process group


def say(message: str) -> None:
    print(f"dev: {message}", flush=True)


@dataclass
class Child:
    name: str
    start: Callable[[], subprocess.Popen]
    log: Path
    # Children restarted with this one (the daemon and webserver hold connections to the
    # code server they were started against).
    dependents: tuple[str, ...] = ()
    # Dagster processes stop cleanly on SIGINT (runs are marked interrupted); the servers on
    # SIGTERM.
    stop_signal: int = signal.SIGTERM
    process: subprocess.Popen | None = None
    deaths: collections.deque = field(default_factory=collections.deque)


class StackStopped(Exception):
    """A child kept dying: the reason, one line."""


class Supervisor:
    def __init__(self, home: Path, max_restarts: int | None = None):
        self.home = home
        self.max_restarts = load().qp_dev_max_restarts if max_restarts is None else max_restarts
        self.children: dict[str, Child] = {}
        self.stopping = False

    def _record_pids(self) -> None:
        pids = {
            name: child.process.pid
            for name, child in self.children.items()
            if child.process is not None
        }
        (self.home / CHILDREN_FILE).write_text(json.dumps(pids))

    def add(self, child: Child) -> None:
        self.children[child.name] = child
        child.process = child.start()
        self._record_pids()

    def watch(self, poll_seconds: float = 0.5, until: Callable[[], bool] = lambda: False) -> None:
        while not until():
            for child in list(self.children.values()):
                if child.process is not None and child.process.poll() is not None:
                    self._restart(child, child.process.returncode)
            time.sleep(poll_seconds)

    def _restart(self, child: Child, code: int) -> None:
        now = time.monotonic()
        child.deaths.append(now)
        while child.deaths and now - child.deaths[0] > RESTART_WINDOW_SECONDS:
            child.deaths.popleft()
        if len(child.deaths) > self.max_restarts:
            raise StackStopped(
                f"{child.name} exited (code {code}) {len(child.deaths)} times within "
                f"{RESTART_WINDOW_SECONDS} s; see {child.log}"
            )
        say(
            f"{child.name} exited with code {code}; restarting it "
            f"({len(child.deaths)}/{self.max_restarts} within {RESTART_WINDOW_SECONDS} s)"
        )
        dependents = [self.children[name] for name in child.dependents if name in self.children]
        for dependent in dependents:
            self._end_group(dependent)
        # What the dead process left in its group (a run worker of a dead code server) goes too.
        self._end_group(child)
        try:
            child.process = child.start()
            for dependent in dependents:
                dependent.process = dependent.start()
        except RuntimeError as exc:
            raise StackStopped(f"{child.name} could not be restarted: {exc}") from exc
        self._record_pids()

    def _end_group(self, child: Child) -> None:
        process = child.process
        if process is None:
            return
        if not _stop_group(process.pid, child.stop_signal, reap=process.poll):
            say(f"{child.name} did not stop within {STOP_GRACE_SECONDS} s; killed it")
        process.wait()

    def stop_all(self) -> None:
        """Last started, first stopped: the daemon launches nothing more, the webserver goes,
        the code server interrupts its run workers, then the services they used."""
        self.stopping = True
        for child in reversed(list(self.children.values())):
            self._end_group(child)
        # A child whose start was interrupted (Ctrl-C while it came up) is in no list yet.
        for pid in own_group_leaders():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        (self.home / CHILDREN_FILE).unlink(missing_ok=True)


def _stop_group(pgid: int, stop_signal: int, reap: Callable[[], object] = lambda: None) -> bool:
    """Send `stop_signal` to the process group and wait for it to be gone, SIGKILL after
    STOP_GRACE_SECONDS; whether it went by itself. `reap` collects an exited leader that is
    this process's child (until then it is a zombie, which counts as gone)."""
    try:
        os.killpg(pgid, stop_signal)
    except ProcessLookupError:
        reap()
        return True
    if wait_group_gone(pgid, STOP_GRACE_SECONDS, reap=reap):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    return False


def end_leftovers(home: Path) -> None:
    """End the parts an earlier `make run` recorded and left running: it was killed, and
    SIGKILL gave it no time to stop them. Their ports come free, and no run worker of theirs
    goes on alone. A recorded pid whose process started after the record was written belongs
    to someone else by now, and is left alone."""
    path = home / CHILDREN_FILE
    try:
        recorded = json.loads(path.read_text())
        written = path.stat().st_mtime
    except (OSError, ValueError):
        return
    for name, pid in reversed(list(recorded.items())):
        started = started_at(pid) if isinstance(pid, int) else None
        if started is None or started > written + 1:
            continue
        say(f"{name} (pid {pid}) was left running by a make run that did not stop; ending it")
        _stop_group(pid, signal.SIGTERM)
    path.unlink(missing_ok=True)
