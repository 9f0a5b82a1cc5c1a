"""The local SMTP sink of `make run`: a real SMTP server (aiosmtpd) on loopback that keeps
every message it accepts as an .eml file, for `queue-pipelines outbox` to list and print."""

from __future__ import annotations

import email
import email.policy
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path


class OutboxHandler:
    """Accepts every message and writes it to `directory`, one file per message."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd hook
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.directory / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        partial = path.with_suffix(".part")
        partial.write_bytes(envelope.content)
        partial.rename(path)  # a reader never sees half a message
        return "250 Message accepted for delivery"


def start_sink(directory: Path, port: int, handler: OutboxHandler | None = None):
    """Start the sink on 127.0.0.1:`port` in a thread of this process; `.stop()` ends it."""
    # aiosmtpd is in the sandbox extra; reading the outbox (queue-pipelines outbox) needs none.
    from aiosmtpd.controller import Controller

    controller = Controller(handler or OutboxHandler(directory), hostname="127.0.0.1", port=port)
    controller.start()
    return controller


@dataclass(frozen=True)
class OutboxEntry:
    name: str
    received: str
    to: str
    subject: str


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def list_messages(directory: Path) -> list[OutboxEntry]:
    """Oldest first; file names sort by the time they were received."""
    if not directory.is_dir():
        return []
    entries = []
    for path in sorted(directory.glob("*.eml")):
        message = parse(path.read_bytes())
        entries.append(
            OutboxEntry(
                name=path.stem,
                received=path.stem.split("-", 1)[0],
                to=str(message.get("To", "")),
                subject=str(message.get("Subject", "")),
            )
        )
    return entries


def find_message(directory: Path, name: str) -> Path:
    """By file name, its stem, a unique prefix of it, or a 1-based index of the listing."""
    paths = sorted(directory.glob("*.eml")) if directory.is_dir() else []
    if name.isdigit() and 1 <= int(name) <= len(paths) and len(name) < 8:
        return paths[int(name) - 1]
    matches = [p for p in paths if p.name == name or p.stem.startswith(name)]
    if len(matches) != 1:
        found = "no message" if not matches else f"{len(matches)} messages"
        raise LookupError(f"{found} in {directory} match {name!r}")
    return matches[0]
