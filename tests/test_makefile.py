"""The README's second-terminal commands work when uv was bootstrapped into .tools/ (not on
PATH): `make -s uv` names the uv to use, `make qp ARGS=...` runs a command with it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

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
    assert "make -s uv" in readme and "make qp ARGS=" in readme
