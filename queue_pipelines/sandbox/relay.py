"""An HTTP relay on loopback in front of a sandbox server, for what the server itself cannot be
asked to do: answer slowly, fail a chosen request, drop a connection.

- `delay_seconds` holds every request that long before it goes on: live-Stripe latency
  (~100-500 ms) in front of localstripe, which answers in milliseconds (bench/e2e.py).
- `fail_next` makes the next matching requests fail: an HTTP status with Stripe's error
  object, `DROP` (the connection is closed unanswered, the server never sees the request) or
  `LOSE_REPLY` (the server acts, the client never hears of it) (the tests).
- `after_answer` runs a fault of the test's at the exact moment the server has acted and
  the client has not yet heard of it: Redis or the ledger's database cut, the client's
  process killed (the tests of docs/guarantees.md).

Everything else reaches the server unchanged, over one pooled client. `seen` records each
request's method, path and the status answered; `arrivals` the moment each came in.

    with Relay("http://127.0.0.1:8420", delay_seconds=0.3) as relay:
        stripe_api = StripeApi(key, api_base=relay.url)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

DROP = 0  # close the connection without forwarding: the server never saw the request
LOSE_REPLY = -1  # forward, then close the connection: the server acted, the client cannot know

_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "host"}


class Relay:
    def __init__(self, upstream: str, delay_seconds: float = 0.0):
        self.upstream = upstream.rstrip("/")
        self.delay_seconds = delay_seconds
        # (method, path prefix, status or DROP or LOSE_REPLY, the error object to answer)
        self.failures: list[tuple[str, str, int, dict | None]] = []
        # (method, path prefix, what to do, whether the client then gets the answer)
        self.answer_hooks: list[tuple[str, str, Callable[[], object], bool]] = []
        self.seen: list[tuple[str, str, int]] = []  # (method, path, status answered)
        self.arrivals: list[float] = []  # time.monotonic() as each request came in
        self._lock = threading.Lock()
        # One pooled client for all handler threads (httpx.Client is thread-safe).
        self._client = httpx.Client(
            timeout=60, limits=httpx.Limits(max_connections=64, max_keepalive_connections=32)
        )
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> int:
        """Requests relayed to the server and answered by it."""
        with self._lock:
            return sum(1 for _, _, status in self.seen if status > 0)

    def fail_next(
        self,
        method: str,
        path_prefix: str,
        status: int = 503,
        times: int = 1,
        error: dict | None = None,
    ) -> None:
        """The next `times` requests of `method` whose path starts with `path_prefix` get
        `status` (with Stripe's error object `error`, or a generic one), or DROP, or
        LOSE_REPLY."""
        with self._lock:
            self.failures += [(method, path_prefix, status, error)] * times

    def after_answer(
        self, method: str, path_prefix: str, action: Callable[[], object], reply: bool = True
    ) -> None:
        """Once, for the next matching request: when the server has answered it, run `action`
        before the client hears anything; then give the client the answer, or (`reply`
        False) hang up."""
        with self._lock:
            self.answer_hooks.append((method, path_prefix, action, reply))

    def _take_hook(self, method: str, path: str) -> tuple[Callable[[], object], bool] | None:
        with self._lock:
            for i, (m, prefix, action, reply) in enumerate(self.answer_hooks):
                if m == method and path.startswith(prefix):
                    del self.answer_hooks[i]
                    return action, reply
        return None

    def _take_failure(self, method: str, path: str) -> tuple[int | None, dict | None]:
        with self._lock:
            for i, (m, prefix, status, error) in enumerate(self.failures):
                if m == method and path.startswith(prefix):
                    del self.failures[i]
                    return status, error
        return None, None

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.seen.append((method, path, status))

    def _forward(self, method: str, path: str, headers, body: bytes) -> httpx.Response:
        headers = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        return self._client.request(method, self.upstream + path, headers=headers, content=body)

    def _handler(relay):  # noqa: N805 - the handler class closes over the relay
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the Stripe SDK expects

            def log_message(self, *args):
                pass

            def _reply(self, status: int, headers, content: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def _hang_up(self) -> None:
                self.close_connection = True
                self.connection.close()

            def _relay(self):
                with relay._lock:
                    relay.arrivals.append(time.monotonic())
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if relay.delay_seconds:
                    time.sleep(relay.delay_seconds)
                method, path = self.command, self.path
                status, error = relay._take_failure(method, path)
                if status == DROP:
                    relay._record(method, path, DROP)
                    return self._hang_up()
                if status is not None and status != LOSE_REPLY:
                    relay._record(method, path, status)
                    error = error or {"type": "api_error", "message": "injected fault"}
                    content = json.dumps({"error": error}).encode()
                    return self._reply(status, [("Content-Type", "application/json")], content)
                try:
                    reply = relay._forward(method, path, self.headers, body)
                except httpx.HTTPError:
                    relay._record(method, path, 502)
                    return self._reply(502, [], b"")
                if status == LOSE_REPLY:
                    relay._record(method, path, LOSE_REPLY)
                    return self._hang_up()
                hook = relay._take_hook(method, path)
                if hook is not None:
                    action, reply_after = hook
                    action()
                    if not reply_after:
                        relay._record(method, path, LOSE_REPLY)
                        return self._hang_up()
                relay._record(method, path, reply.status_code)
                headers = [
                    (name, value)
                    for name, value in reply.headers.items()
                    if name.lower() not in _HOP_BY_HOP | {"content-encoding"}
                ]
                self._reply(reply.status_code, headers, reply.content)

            do_GET = do_POST = do_DELETE = _relay

        return Handler

    def start(self) -> Relay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
