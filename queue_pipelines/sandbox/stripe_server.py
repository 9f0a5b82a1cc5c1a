"""Run localstripe with its state kept where we say.

localstripe pickles its whole store to /tmp/localstripe.pickle after every write and loads it
at start. That one path is shared by every localstripe on the machine: two of them (tests
beside `make run`) overwrite each other, and one may load the other's half-written file and
die. Here each server keeps its own file (`--state`), written atomically, or none at all.

localstripe answers every listing by walking its whole store, so its requests slow down as
the store grows; here the store is indexed (stripe_index.py) and each answer takes constant
time, as Stripe's do.

localstripe also ignores `Idempotency-Key`; here it is honoured as Stripe does
(stripe_idempotency.py), unless `--no-idempotency` says otherwise. A deleted customer is
answered as Stripe answers it (`deleted: true`), not as one never made (stripe_deleted.py).

    python -m queue_pipelines.sandbox.stripe_server --port 8420 [--state .dagster_home/stripe.pickle]
        [--no-idempotency]
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import socket
import tempfile
from pathlib import Path

import localstripe.resources
import localstripe.server
from aiohttp import web

from queue_pipelines.sandbox import stripe_deleted, stripe_index, stripe_listing
from queue_pipelines.sandbox.stripe_idempotency import IdempotencyLayer

# The saved answers to idempotency keys live in localstripe's own store, under a name no
# localstripe object has (its lists pick objects by an "<object>:" prefix): so they go to the
# state file in the same atomic write as the objects their requests made, come back with
# them after a restart (a retry then is not charged twice), and are flushed with them.
IDEMPOTENCY_RECORDS = "queue_pipelines.idempotency_records"


def keep_state_in(path: Path | None) -> None:
    store = localstripe.resources.Store

    def load(self) -> None:
        if path is not None and path.exists():
            with path.open("rb") as handle:
                self.clear()
                self.update(pickle.load(handle))

    def dump(self) -> None:
        if path is None:
            return
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
            pickle.dump(dict(self), handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, path)

    store.try_load_from_disk = load
    store.dump_to_disk = dump
    # localstripe writes the file after every write to its store, several times a request,
    # and again after each POST, PUT and DELETE (save_store_middleware): each write pickles
    # the whole store, so a payment cost ~8 pickles of it. Only the request's write is kept:
    # a request's changes reach the file together, once (and, in the rare write outside a
    # request, with the next request's or at shutdown).
    store.__setitem__ = dict.__setitem__
    store.__delitem__ = dict.__delitem__


async def _write_state_file(_app: web.Application) -> None:
    localstripe.resources.store.dump_to_disk()


def honour_idempotency_keys(app: web.Application) -> None:
    store = localstripe.resources.store
    layer = IdempotencyLayer(lambda: store.setdefault(IDEMPOTENCY_RECORDS, {}))
    # Innermost: behind localstripe's auth check, and inside its middleware that writes the
    # state file after each POST, so that write holds the answer just saved.
    app.middlewares.append(layer.middleware)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, help="state file (default: memory only)")
    parser.add_argument(
        "--no-idempotency",
        dest="idempotency",
        action="store_false",
        help="ignore Idempotency-Key, as localstripe itself does",
    )
    args = parser.parse_args()
    if args.state is not None:
        args.state.parent.mkdir(parents=True, exist_ok=True)
    keep_state_in(args.state)
    stripe_listing.install()
    # After the listing it wraps, before the load that fills the store through it.
    stripe_index.install(localstripe.server.app)
    stripe_deleted.install(localstripe.server.app)
    if args.state is not None:
        localstripe.resources.store.try_load_from_disk()
        localstripe.server.app.on_cleanup.append(_write_state_file)
    if args.idempotency:
        honour_idempotency_keys(localstripe.server.app)
    # localstripe.server.start() would listen on every interface ('::'): loopback only here.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    logger = logging.getLogger("aiohttp.access")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(logging.StreamHandler())
    web.run_app(localstripe.server.app, sock=sock, access_log=logger)


if __name__ == "__main__":
    main()
