"""The local SMTP sink (outbox.py) as a process of its own, so whoever starts it does not share
a GIL with it: the benchmark measures the pipeline's mails through it and its CPU apart.

    python -m queue_pipelines.sandbox.smtp_sink --port 2525 --dir /tmp/outbox

It keeps each message as an .eml file in `--dir`, as `make run`'s sink does, until SIGTERM or
SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from pathlib import Path

from queue_pipelines.sandbox.servers import refuse_taken_port, wait_for_port


def start_smtp_sink(port: int, directory: Path, log_file: Path | None = None) -> subprocess.Popen:
    """The sink on 127.0.0.1:`port`, in a child process; stop it with servers.stop()."""
    refuse_taken_port(port, "the SMTP sink")
    args = [sys.executable, "-m", __name__, "--port", str(port), "--dir", str(directory)]
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT)
    wait_for_port(port, process, "the SMTP sink")
    return process


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="where messages are kept")
    args = parser.parse_args(argv)

    from queue_pipelines.sandbox.outbox import start_sink

    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    controller = start_sink(args.dir, args.port)
    try:
        while not stopping.wait(1):
            pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
