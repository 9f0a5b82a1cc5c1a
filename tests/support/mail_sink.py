"""A real SMTP server (aiosmtpd, the local sink's handler) that tests can read and script."""

from __future__ import annotations

import threading
from email.message import EmailMessage
from pathlib import Path

from queue_pipelines.sandbox.outbox import OutboxHandler, parse, start_sink
from queue_pipelines.sandbox.servers import free_port


class ScriptedHandler(OutboxHandler):
    """Keeps what it accepts; `refuse_next_rcpt` makes the next RCPT TOs get a given reply."""

    def __init__(self, directory: Path):
        super().__init__(directory)
        self.received: list[EmailMessage] = []
        self.rcpt_replies: list[str] = []
        self._lock = threading.Lock()

    def refuse_next_rcpt(self, reply: str, times: int = 1) -> None:
        with self._lock:
            self.rcpt_replies += [reply] * times

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        with self._lock:
            reply = self.rcpt_replies.pop(0) if self.rcpt_replies else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        reply = await super().handle_DATA(server, session, envelope)
        with self._lock:
            self.received.append(parse(envelope.content))
        return reply


class MailSink:
    def __init__(self, directory: Path, port: int | None = None):
        self.port = port or free_port()
        self.handler = ScriptedHandler(directory)
        self.controller = None

    def start(self) -> MailSink:
        self.controller = start_sink(self.handler.directory, self.port, self.handler)
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def to(self, address: str) -> list[EmailMessage]:
        with self.handler._lock:
            return [m for m in self.handler.received if address in str(m["To"])]
