"""`python -m queue_pipelines.warm_code_server api grpc ...`: Dagster's own code server, whose
run workers fork from a forkserver that has already imported the code location.

Why: Dagster's default run launcher asks the code server to start each run, and the code
server (`DagsterApiServer.StartRun`, dagster/_grpc/server.py) starts the run worker through
multiprocessing's `spawn` context, held in its private attribute `_mp_ctx`: a fresh
interpreter that imports Dagster and the code location before the run can start (launch ->
RUN_START 1.95 s on a compiled venv, against 0.51 s forked from a preloaded forkserver; issue
18). Here that one attribute becomes a `forkserver` context preloading the code location's
module and what a run worker imports to open its instance; everything else (termination events, the orphan check, the process group the
workers live in) is Dagster's, unchanged. The forkserver is started with the code server,
in its process group, and ends with it; it keeps the code it imported, so the code server
has to restart after a code change (`make run` supervises it).

For one host only (`make run`, the bench, a single-host deployment on the default run
launcher): on Kubernetes the K8sRunLauncher starts run workers as pods, never through
`StartRun`. Where anything differs from what was checked here (another Dagster release, no
`_mp_ctx` spawn context, a code location that is not a module, a preload that did not take),
the code server keeps `spawn` and says why in its log.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import sys
from collections.abc import Callable, Sequence
from multiprocessing.context import BaseContext, SpawnContext

import dagster
from dagster._core.instance.ref import InstanceRef
from dagster._grpc.server import DagsterApiServer
from dagster._serdes import ConfigurableClassData

from queue_pipelines import settings

# The release whose DagsterApiServer was read for this: `_mp_ctx` is a spawn context and the
# only way StartRun creates a run worker.
CHECKED_DAGSTER_RELEASE = "1.13."
PRELOAD_CHECK_SECONDS = 120


def exit_unless_imported(module: str) -> None:
    """Run in a child of the forkserver: exit 0 only if `module` came with the fork."""
    sys.exit(0 if module in sys.modules else 3)


def run_worker_modules(code_location: str) -> list[str]:
    """What a run worker imports before its first step: the code location, the module that
    runs it, and the modules of the instance's storage and other configured classes (from
    DAGSTER_HOME's dagster.yaml), which Dagster imports only once a run opens its instance
    (0.4 s of a run's start here, with the SQLite storage's alembic and sqlalchemy)."""
    modules = [code_location, "dagster._grpc.impl"]
    home = settings.load().dagster_home
    if home is None:
        return modules
    try:
        configured = InstanceRef.from_dir(str(home))._asdict().values()
    except Exception:  # noqa: BLE001 - Dagster's code server starts without an instance too
        return modules
    return modules + sorted(
        {data.module_name for data in configured if isinstance(data, ConfigurableClassData)}
    )


def preloaded_forkserver(module: str, also: Sequence[str] = ()) -> BaseContext | None:
    """A forkserver context whose forkserver has imported `module` (and tried `also`), or
    None if it has not.

    multiprocessing ignores a preload's ImportError without a word, so a child of the
    forkserver is asked; any other error at import ends the forkserver, and the child never
    starts. Starting it here also starts the forkserver now, with the code server, rather
    than on the first run."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([module, *also])
    probe = context.Process(target=exit_unless_imported, args=(module,), name="preload-check")
    try:
        probe.start()
    except (OSError, EOFError):  # the forkserver died before it forked the probe
        return None
    probe.join(PRELOAD_CHECK_SECONDS)
    return context if probe.exitcode == 0 else None


def _warm_run_workers(server: DagsterApiServer, logger: logging.Logger) -> None:
    if not isinstance(getattr(server, "_mp_ctx", None), SpawnContext):
        logger.warning(
            "run workers: Dagster's code server has no spawn context in _mp_ctx to replace "
            "(Dagster %s); run workers are spawned",
            dagster.__version__,
        )
        return
    origin = getattr(server, "_loadable_target_origin", None)
    module = origin.module_name if origin is not None else None
    if not module:
        logger.warning(
            "run workers: only a code location loaded as a module (-m) can be preloaded; "
            "run workers are spawned"
        )
        return
    also = run_worker_modules(module)[1:]
    context = preloaded_forkserver(module, also)
    if context is None:
        logger.warning(
            "run workers: the forkserver could not import %s (see the errors above); "
            "run workers are spawned",
            module,
        )
        return
    server._mp_ctx = context  # noqa: SLF001 - the attribute this module exists to set
    logger.info("run workers: forked from a forkserver with %s imported (and %s)", module, also)


def install() -> bool:
    """Make every DagsterApiServer built after this warm its run workers; whether it will."""
    if not dagster.__version__.startswith(CHECKED_DAGSTER_RELEASE):
        logging.getLogger("dagster.code_server").warning(
            "run workers: Dagster %s is not the %sx this was checked against; run workers "
            "are spawned",
            dagster.__version__,
            CHECKED_DAGSTER_RELEASE,
        )
        return False
    server_init: Callable = DagsterApiServer.__init__

    @functools.wraps(server_init)
    def init(self: DagsterApiServer, *args, **kwargs) -> None:
        server_init(self, *args, **kwargs)
        _warm_run_workers(self, kwargs.get("logger") or logging.getLogger("dagster.code_server"))

    DagsterApiServer.__init__ = init
    return True


def main() -> None:
    install()
    from dagster._cli import main as dagster_main

    # `python -m queue_pipelines.warm_code_server api grpc ...` reads as `dagster api grpc ...`.
    sys.argv[0] = "dagster"
    dagster_main()


if __name__ == "__main__":
    # Through the module's own name, so that what crosses to the forkserver's children is
    # pickled as queue_pipelines.warm_code_server.*, not __main__.*.
    from queue_pipelines.warm_code_server import main as warm_main

    warm_main()
