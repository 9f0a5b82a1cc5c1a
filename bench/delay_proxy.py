"""A delaying HTTP proxy on loopback: every request waits `delay_seconds`, then goes to the
upstream server unchanged. It puts live-Stripe latency (~100-500 ms) in front of localstripe,
which answers in milliseconds, so the bench sees how the pipeline copes with slow providers.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "host"}


class DelayProxy:
    def __init__(self, upstream: str, delay_seconds: float):
        self.upstream = upstream.rstrip("/")
        self.delay_seconds = delay_seconds
        self.requests = 0
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

    def _handler(proxy):  # noqa: N805 - the handler class closes over the proxy
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the Stripe SDK expects

            def log_message(self, *args):
                pass

            def _relay(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(proxy.delay_seconds)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                try:
                    reply = proxy._client.request(
                        self.command, proxy.upstream + self.path, headers=headers, content=body
                    )
                except httpx.HTTPError:
                    self.send_error(502)
                    return
                with proxy._lock:
                    proxy.requests += 1
                self.send_response(reply.status_code)
                for name, value in reply.headers.items():
                    if name.lower() not in _HOP_BY_HOP | {"content-encoding"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            do_GET = do_POST = do_DELETE = _relay

        return Handler

    def start(self) -> DelayProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()
