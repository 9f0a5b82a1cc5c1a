"""The warm code server's forkserver, in a process of its own per test (a process has one
forkserver, started once): its children find the code location already imported, where
spawned children do not; and a preload that fails, which multiprocessing ignores without a
word, is noticed, so the code server keeps spawn. The stack's side (run workers, terminate,
SIGKILL, Ctrl-C) is tests/test_stack_run_workers.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CODE_LOCATION = "queue_pipelines.definitions"

# Prints what a child of `context` found imported at its start, as JSON.
CHILD_REPORT = """
import json, multiprocessing, os, sys
from queue_pipelines.warm_code_server import preloaded_forkserver
from tests.support.preload_probe import report

context = {context}
queue = context.Queue()
child = context.Process(target=report, args=(queue, {module!r}))
child.start()
found = queue.get(timeout=120)
child.join(60)
print(json.dumps({{**found, "me": os.getpid(), "here": {module!r} in sys.modules}}))
"""


def last_line_of(script: str) -> str:
    """What `script`, run by a fresh interpreter in the project, printed last."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def child_report(context: str, module: str = CODE_LOCATION) -> dict:
    return json.loads(last_line_of(CHILD_REPORT.format(context=context, module=module)))


def test_children_of_the_forkserver_start_with_the_code_location_imported():
    found = child_report(f"preloaded_forkserver({CODE_LOCATION!r})")
    assert found["imported"] is True
    # Forked by the forkserver, not by the process that asked for the child; and the asking
    # process never imported the code location itself, so the child's copy is the preload's.
    assert found["parent"] != found["me"]
    assert found["here"] is False


def test_spawned_children_start_without_it():
    # The same probe on Dagster's own context: what the preload saves each run worker.
    found = child_report('multiprocessing.get_context("spawn")')
    assert found["imported"] is False
    assert found["parent"] == found["me"]


@pytest.mark.parametrize(
    "module",
    # multiprocessing swallows the first; the second ends the forkserver before it serves.
    ["queue_pipelines.no_such_module", "tests.support.raises_at_import"],
)
def test_a_preload_that_fails_is_noticed(module):
    script = (
        "from queue_pipelines.warm_code_server import preloaded_forkserver\n"
        f"print(preloaded_forkserver({module!r}) is None)\n"
    )
    assert last_line_of(script) == "True"
