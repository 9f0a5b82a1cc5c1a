"""A small HTTP proxy in front of a real server that fails chosen requests on purpose.

For faults the real component cannot be asked to produce: a 503 from Stripe, a dropped
connection. Everything else passes through to the real server untouched.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

DROP = 0  # drop the connection without forwarding: the server never saw the request
LOSE_REPLY = -1  # forward, then drop the connection: the server acted, the client cannot know


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        # (method, path prefix, status or DROP or LOSE_REPLY, the error object to answer)
        self.failures: list[tuple[str, str, int, dict | None]] = []
        self.seen: list[tuple[str, str, int]] = []  # (method, path, status returned)
        self.arrivals: list[float] = []  # time.monotonic() as each request came in
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(
        self,
        method: str,
        path_prefix: str,
        status: int = 503,
        times: int = 1,
        error: dict | None = None,
    ):
        """The next `times` matching requests get `status` (with Stripe's error object
        `error`, or a generic one), or DROP, or LOSE_REPLY."""
        with self._lock:
            self.failures += [(method, path_prefix, status, error)] * times

    def _take_failure(self, method: str, path: str) -> tuple[int | None, dict | None]:
        with self._lock:
            for i, (m, prefix, status, error) in enumerate(self.failures):
                if m == method and path.startswith(prefix):
                    del self.failures[i]
                    return status, error
        return None, None

    def _forward(self, method: str, path: str, headers: dict, body: bytes) -> httpx.Response:
        headers = {k: v for k, v in headers.items() if k.lower() != "host"}
        return httpx.request(method, self.upstream + path, headers=headers, content=body)

    def _handler(proxy):  # noqa: N805 - the handler class closes over the proxy
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _relay(self):
                with proxy._lock:
                    proxy.arrivals.append(time.monotonic())
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, error = proxy._take_failure(self.command, self.path)
                if status == LOSE_REPLY:
                    proxy._forward(self.command, self.path, dict(self.headers), body)
                    proxy.seen.append((self.command, self.path, LOSE_REPLY))
                    self.close_connection = True
                    self.connection.close()
                    return
                if status == DROP:
                    proxy.seen.append((self.command, self.path, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if status is not None:
                    error = error or {"type": "api_error", "message": "injected fault"}
                    payload = json.dumps({"error": error}).encode()
                    proxy.seen.append((self.command, self.path, status))
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                reply = proxy._forward(self.command, self.path, dict(self.headers), body)
                proxy.seen.append((self.command, self.path, reply.status_code))
                self.send_response(reply.status_code)
                for name, value in reply.headers.items():
                    if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            do_GET = do_POST = do_DELETE = _relay

        return Handler

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
