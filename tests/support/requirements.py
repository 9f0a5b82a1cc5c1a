"""Tests that need a tool this machine may lack (Node.js ...): skipped on a laptop without it,
failed in CI, where QP_REQUIRE_ALL=1 (.ci/run) says nothing may be skipped quietly."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def require_all() -> bool:
    return os.environ.get("QP_REQUIRE_ALL") == "1"


def skip_unless(available: bool, reason: str) -> None:
    """Skip the calling test or fixture for want of `reason`, or fail under QP_REQUIRE_ALL=1."""
    if available:
        return
    if require_all():
        pytest.fail(f"{reason} (QP_REQUIRE_ALL=1: a missing tool fails the run)", pytrace=False)
    pytest.skip(reason)


def node_and_npm(purpose: str) -> tuple[str, str]:
    """The paths of `node` and `npm`, or a skip (a failure under QP_REQUIRE_ALL=1) that says
    what to install."""
    node, npm = shutil.which("node"), shutil.which("npm")
    skip_unless(
        bool(node and npm),
        f"Node.js and npm are needed {purpose}: install them (Debian: apt-get install nodejs "
        f"npm; else https://nodejs.org), then run the tests again",
    )
    return node, npm


def node_with_packages(tool: Path, package: str, purpose: str, timeout: float = 300) -> str:
    """The path of `node`, once the npm packages pinned in `tool` are installed there (`npm ci`
    from its lock file when `package` is missing); a skip or failure as above without Node.js."""
    node, npm = node_and_npm(purpose)
    if not (tool / "node_modules" / package).exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=tool, check=True, capture_output=True,
            timeout=timeout,
        )  # fmt: skip
    return node
