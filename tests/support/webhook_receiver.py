"""A webhook receiver on loopback, as a platform service would run one: it checks each
delivery's signature with the documented algorithm (written out here, independently of the
sender's code), answers with scripted statuses, and processes each webhook-id once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def expected_signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = webhook_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signature_valid: bool
    status: int

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class WebhookReceiver:
    def __init__(self, secret: str):
        self.secret = secret
        self.statuses: list[int] = []  # answers for the next requests; 200 once exhausted
        self.received: list[Received] = []
        self.processed: dict[str, dict] = {}  # webhook-id -> event, first valid delivery only
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks"

    def answer(self, *statuses: int) -> None:
        with self._lock:
            self.statuses += statuses

    def _handler(receiver):  # noqa: N805 - the handler class closes over the receiver
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                webhook_id = headers.get("webhook-id", "")
                timestamp = headers.get("webhook-timestamp", "0")
                valid = abs(time.time() - int(timestamp)) <= 300 and any(
                    hmac.compare_digest(
                        expected_signature(receiver.secret, webhook_id, timestamp, body), given
                    )
                    for given in headers.get("webhook-signature", "").split(" ")
                )
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if not valid:
                        status = 401
                    receiver.received.append(Received(headers, body, valid, status))
                    if status == 200 and webhook_id not in receiver.processed:
                        receiver.processed[webhook_id] = json.loads(body)
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        return Handler

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
