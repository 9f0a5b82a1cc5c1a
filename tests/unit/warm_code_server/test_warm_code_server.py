"""The warm code server's fallbacks: wherever Dagster's code server is not what was checked,
run workers stay spawned, and the log says why. No process is started here (the forkserver
and its preload are tests/warm_code_server/test_warm_code_server.py's)."""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import shutil
from pathlib import Path
from types import SimpleNamespace

import dagster
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._grpc.server import DagsterApiServer

from queue_pipelines import warm_code_server

LOGGER = "test.warm_code_server"


def server_with(mp_ctx, origin) -> SimpleNamespace:
    """A stand-in for DagsterApiServer with the two attributes the wrapper reads."""
    return SimpleNamespace(_mp_ctx=mp_ctx, _loadable_target_origin=origin)


def module_origin(module: str | None = "queue_pipelines.definitions") -> LoadableTargetOrigin:
    return LoadableTargetOrigin(module_name=module, python_file=None if module else "defs.py")


def test_a_server_without_a_spawn_context_keeps_what_it_has_and_says_so(caplog):
    fork = multiprocessing.get_context("fork")
    server = server_with(fork, module_origin())
    with caplog.at_level(logging.WARNING, LOGGER):
        warm_code_server._warm_run_workers(server, logging.getLogger(LOGGER))  # noqa: SLF001
    assert server._mp_ctx is fork  # noqa: SLF001
    assert "no spawn context in _mp_ctx" in caplog.text


def test_a_server_missing_the_attribute_is_left_alone_and_says_so(caplog):
    server = SimpleNamespace(_loadable_target_origin=module_origin())
    with caplog.at_level(logging.WARNING, LOGGER):
        warm_code_server._warm_run_workers(server, logging.getLogger(LOGGER))  # noqa: SLF001
    assert not hasattr(server, "_mp_ctx")
    assert "run workers are spawned" in caplog.text


def test_a_code_location_from_a_file_keeps_spawn_and_says_so(caplog):
    spawn = multiprocessing.get_context("spawn")
    server = server_with(spawn, module_origin(None))
    with caplog.at_level(logging.WARNING, LOGGER):
        warm_code_server._warm_run_workers(server, logging.getLogger(LOGGER))  # noqa: SLF001
    assert server._mp_ctx is spawn  # noqa: SLF001
    assert "only a code location loaded as a module" in caplog.text


def test_another_dagster_release_is_not_patched(monkeypatch, caplog):
    monkeypatch.setattr(dagster, "__version__", "1.14.0")
    before = DagsterApiServer.__init__
    with caplog.at_level(logging.WARNING, "dagster.code_server"):
        assert warm_code_server.install() is False
    assert DagsterApiServer.__init__ is before
    assert "Dagster 1.14.0 is not the 1.13.x" in caplog.text


def test_the_checked_release_is_the_installed_one():
    # When the Dagster pin moves, this fails first: re-read DagsterApiServer.StartRun and
    # _mp_ctx in dagster/_grpc/server.py, then move CHECKED_DAGSTER_RELEASE.
    assert dagster.__version__.startswith(warm_code_server.CHECKED_DAGSTER_RELEASE)


def test_run_workers_get_the_instance_modules_of_dagster_home_preloaded(tmp_path, monkeypatch):
    shutil.copy(Path(__file__).resolve().parents[3] / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    modules = warm_code_server.run_worker_modules("queue_pipelines.definitions")
    assert modules[:2] == ["queue_pipelines.definitions", "dagster._grpc.impl"]
    # The SQLite run storage and the run coordinator dagster.yaml names, among others.
    assert {"dagster._core.storage.runs", "dagster._core.run_coordinator"} <= set(modules)
    # The forkserver skips a name it cannot import without a word: each must be importable.
    assert all(importlib.util.find_spec(module) for module in modules)


def test_without_a_readable_instance_only_the_code_location_and_its_runner(tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_text("storage: [\n")
    for home in (None, str(tmp_path)):
        if home is None:
            monkeypatch.delenv("DAGSTER_HOME", raising=False)
        else:
            monkeypatch.setenv("DAGSTER_HOME", home)
        assert warm_code_server.run_worker_modules("queue_pipelines.definitions") == [
            "queue_pipelines.definitions",
            "dagster._grpc.impl",
        ]
