"""Every module of the project sits in the import-linter layers (pyproject.toml): a new
top-level module or package outside them fails here, before its imports can run any way."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import queue_pipelines

ROOT = Path(__file__).resolve().parents[2]


def importlinter() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def layers_contract() -> dict:
    [contract] = [c for c in importlinter()["contracts"] if c["type"] == "layers"]
    return contract


def layered_modules(*, optional: bool = True) -> set[str]:
    """The modules the layers name: one line per layer, siblings split by ':' or '|'; a name
    in parentheses is optional (a module on its way in)."""
    named: set[str] = set()
    for layer in layers_contract()["layers"]:
        for sibling in layer.replace("|", ":").split(":"):
            name = sibling.strip()
            if optional or not name.startswith("("):
                named.add(name.strip("()"))
    return named


def project_modules() -> set[str]:
    """The top-level packages and modules of the root packages the contracts cover."""
    found = {"resources", "sensors"}
    for module in pkgutil.iter_modules(queue_pipelines.__path__):
        found.add(f"queue_pipelines.{module.name}")
    return found


def test_the_contracts_cover_the_projects_root_packages():
    # resources and sensors are layers whole: a module added to them is in its layer already.
    assert set(importlinter()["root_packages"]) == {"queue_pipelines", "resources", "sensors"}


def test_every_top_level_module_is_in_a_layer():
    outside = project_modules() - layered_modules()
    assert not outside, (
        f"{sorted(outside)} in no layer of pyproject.toml's [tool.importlinter] layers "
        'contract: add each where its imports put it (README, "Layout")'
    )


def test_every_layer_names_a_module_that_exists():
    gone = layered_modules(optional=False) - project_modules()
    assert not gone, f"layers name {sorted(gone)}, which the project no longer has"
