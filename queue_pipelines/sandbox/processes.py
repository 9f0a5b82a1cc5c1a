"""Processes and process groups as Linux's /proc shows them: which are still running, and
when they started.

A killed process stays in the process table as a zombie (state `Z`) until its parent reaps
it. An orphan's parent is PID 1, and PID 1 on some machines reaps only every few seconds, so
`os.killpg(pgid, 0)` keeps succeeding for a group whose members have all died. Here a zombie
counts as gone: it runs nothing, holds no port and writes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

PROC = Path("/proc")
GONE_STATES = {"Z", "X"}  # zombie, dead


def stat_fields(stat: Path) -> list[str]:
    """A /proc/<pid>/stat's fields after the command name (which may hold spaces and
    parentheses): the state first, then the parent's pid, then the process group."""
    return stat.read_text().rsplit(")", 1)[1].split()


def _processes() -> Iterator[tuple[int, list[str]]]:
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            yield int(stat.parent.name), stat_fields(stat)
        except (OSError, IndexError):
            continue  # it ended while we looked


def group_alive(pgid: int) -> bool:
    """Whether any member of process group `pgid` is still running (zombies are not)."""
    return any(
        int(fields[2]) == pgid and fields[0] not in GONE_STATES for _, fields in _processes()
    )


def wait_group_gone(
    pgid: int, timeout: float, reap: Callable[[], object] = lambda: None, interval: float = 0.1
) -> bool:
    """Wait up to `timeout` seconds for group `pgid` to have no running member; whether it
    got there. `reap` collects a leader that is this process's child."""
    deadline = time.monotonic() + timeout
    while True:
        reap()
        if not group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def started_at(pid: int) -> float | None:
    """When process `pid` started, in Unix seconds (to the clock tick), or None: no such
    process, or a zombie (/proc/<pid>/stat field 22, in clock ticks after boot)."""
    try:
        fields = stat_fields(PROC / str(pid) / "stat")
        boot = next(
            float(line.split()[1])
            for line in (PROC / "stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, IndexError):
        return None
    if fields[0] in GONE_STATES:
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def own_group_leaders() -> list[int]:
    """Pids of this process's children that lead a process group of their own."""
    me = os.getpid()
    return [pid for pid, fields in _processes() if int(fields[1]) == me and int(fields[2]) == pid]
