"""The README's commands work when uv was bootstrapped into .tools/ (not on PATH): they run the
project's .venv/bin (which `make run` syncs) or `make qp ARGS=...`; `make -s uv` names the uv
make uses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.support.shell_blocks import (
    REQUEST_SHOW,
    YAML_BLOCK,
    banner_commands,
    cli_arguments,
    parse_cli,
    resolves,
    shell_commands,
)

ROOT = Path(__file__).resolve().parent.parent


def make(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", "--no-print-directory", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def path_without_uv() -> dict:
    """The environment of a shell where `uv` is not a command (as after the bootstrap)."""
    if not (ROOT / ".tools/bin/uv").exists() and not shutil.which("uv"):
        pytest.skip("no uv at all: run `make sync` first")
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    kept = [d for d in dirs if not (Path(d) / "uv").exists()]
    env = {**os.environ, "PATH": os.pathsep.join(kept)}
    env.pop("VIRTUAL_ENV", None)
    return env


def test_make_names_the_uv_it_uses(path_without_uv):
    if not (ROOT / ".tools/bin/uv").exists():
        pytest.skip("uv is not bootstrapped into .tools/ on this machine")
    result = make("uv", env=path_without_uv)
    assert result.returncode == 0, result.stderr
    uv = Path(result.stdout.strip())
    assert uv == (ROOT / ".tools/bin/uv").resolve()
    version = subprocess.run([str(uv), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("uv ")


def test_the_cli_runs_through_make_without_uv_on_path(path_without_uv):
    if not (ROOT / ".tools/bin/uv").exists():
        pytest.skip("uv is not bootstrapped into .tools/ on this machine")
    result = make("qp", "ARGS=--help", env=path_without_uv)
    assert result.returncode == 0, result.stderr
    assert "enqueue" in result.stdout and "gateway" in result.stdout


def test_the_readme_says_how():
    readme = (ROOT / "README.md").read_text()
    assert ".venv/bin/queue-pipelines" in readme and "make qp ARGS=" in readme


# The README's commands as written (issue #21, item 2): each resolves to a program that exists
# when uv is not on the PATH (no exit 127), each `queue-pipelines` command parses with the
# CLI's own parser, each request key the README shows was made by an earlier step, and the
# `dagster` CLI runs on the instance `make run` serves.


@pytest.fixture(scope="module")
def readme() -> str:
    return (ROOT / "README.md").read_text()


def test_every_readme_and_banner_command_resolves_without_uv_on_path(readme, path_without_uv):
    commands = shell_commands(readme) + banner_commands()
    assert len(commands) > 15
    path = path_without_uv["PATH"]
    missing = [
        command.text for command in commands if command.argv and not resolves(command.argv[0], path)
    ]
    assert missing == [], "these would exit 127 (command not found):\n" + "\n".join(missing)


def test_no_readme_text_says_to_type_a_bare_command(readme):
    """Inline commands as much as blocks: `uv run` and a bare `queue-pipelines` or `dagster`
    exit 127 after the bootstrap."""
    spans = re.findall(r"`([^`\n]+)`", readme)
    bare = [s for s in spans if s.startswith(("uv run", "queue-pipelines ", "dagster "))]
    assert bare == []
    source = (ROOT / "queue_pipelines/sandbox/dev.py").read_text()
    assert not re.search(r"uv run \w", source)  # the banner's lines


def test_every_readme_and_banner_cli_command_parses(readme):
    parsed = 0
    for command in shell_commands(readme) + banner_commands():
        arguments = cli_arguments(command)
        if arguments is not None:
            parse_cli(arguments)
            parsed += 1
    assert parsed >= 10


def created_requests(readme: str) -> list[tuple[int, str]]:
    """(offset, request key) of what the README's steps enqueue: CLI requests, the envelope
    sent to the gateway, and the run config launched with `dagster job execute`."""
    created = []
    for command in [*shell_commands(readme), *banner_commands()]:
        arguments = cli_arguments(command)
        args = parse_cli(arguments) if arguments else None
        if args is not None and args.command == "enqueue" and args.type:
            if args.key is None:
                continue  # a random key: nothing later can name it
            created.append((command.at, f"{args.type}:{args.tenant}:{args.key}"))
        words = command.argv
        if words and words[0] == "curl" and "-d" in words:
            envelope = json.loads(words[words.index("-d") + 1])
            key = f"{envelope['type']}:{envelope['tenant_id']}:{envelope['idempotency_key']}"
            created.append((command.at, key))
    for block in YAML_BLOCK.finditer(readme):
        config = yaml.safe_load(textwrap.dedent(block.group(1)))["ops"]["charge_payments"]
        for request in config["config"]["requests"]:
            key = f"payment:{config['config']['tenant_id']}:{request['idempotency_key']}"
            created.append((block.start(), key))
    return created


def test_every_request_key_the_readme_shows_was_made_by_an_earlier_step(readme):
    created = created_requests(readme)
    shown = [(m.start(), m.group(1)) for m in REQUEST_SHOW.finditer(readme)]
    assert len(shown) >= 3
    unknown = [
        key for at, key in shown if not any(made == key and was < at for was, made in created)
    ]
    assert unknown == [], f"`request show` of keys no earlier step creates: {unknown}"
    banner = banner_commands()[0]
    assert ("payment:demo:order-1042" in [key for _, key in created_requests(readme)]) and (
        "--key order-1042" in banner.text
    )


def test_the_readme_launches_by_hand_on_the_make_run_instance(readme):
    """`dagster job execute` on the instance the UI shows (DAGSTER_HOME, as `make validate`
    sets it), with a run config the job accepts."""
    import dagster as dg

    from queue_pipelines.definitions import defs

    launches = [c for c in shell_commands(readme) if c.argv[:1] == [".venv/bin/dagster"]]
    assert launches
    for command in launches:
        home = command.assignments.get("DAGSTER_HOME", "")
        assert home.startswith("$PWD/") and home.endswith("/.dagster_home"), command.text
        job = command.argv[command.argv.index("-j") + 1]
        [block] = YAML_BLOCK.findall(readme)
        result = dg.validate_run_config(
            defs.resolve_job_def(job), yaml.safe_load(textwrap.dedent(block))
        )
        assert result["ops"]["charge_payments"]["config"]["tenant_id"] == "demo"
    makefile = (ROOT / "Makefile").read_text()
    assert "DAGSTER_HOME=$(CURDIR)/.dagster_home" in makefile


def test_make_qp_prints_only_the_command_output(path_without_uv):
    """No `uv sync` lines (Resolved, Audited) and no echoed recipe before the output."""
    result = subprocess.run(
        ["make", "--no-print-directory", "qp", "ARGS=schema"],
        cwd=ROOT,
        env=path_without_uv,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert json.loads(result.stdout)["title"]


def test_make_sync_compiles_the_projects_own_packages(path_without_uv):
    """uv compiles what it installs, not the editable project: a run worker would compile the
    project's modules on every start (issue #18, item 3)."""
    import importlib.util

    result = make("sync", env=path_without_uv)
    assert result.returncode == 0, result.stderr
    stale = []
    for package in ("queue_pipelines", "resources", "sensors"):
        for source in (ROOT / package).rglob("*.py"):
            compiled = Path(importlib.util.cache_from_source(str(source)))
            if not compiled.exists() or compiled.stat().st_mtime < source.stat().st_mtime:
                stale.append(str(source.relative_to(ROOT)))
    assert stale == []
