"""The unit tier: no servers. Every test here runs on in-memory stand-ins (tests/support) or
on files (SQLite), and this file makes that a rule rather than a habit: a unit test that
opens a network connection or starts a process fails, and so does one that asks for a
fixture of the integration tier (tests/conftest.py), which would start a server."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.memory_intake import MemoryIntake, memory_intake

UNIT_DIR = Path(__file__).parent

# The integration tier's fixtures that start or reach a server.
SERVER_FIXTURES = {
    "redis_url",
    "key_prefix",
    "redis_resource",
    "intake",
    "localstripe_url",
    "idempotent_localstripe_url",
    "stripe_resource",
    "postgres_server_url",
    "postgres_url",
    "instance",
    "ledger_resource",
    "ledger",
    "mail_sink",
    "smtp_resource",
    "resources",
    "rpc_ledger",
    "rpc_solana",
}


def pytest_collection_modifyitems(items):
    offenders = []
    for item in items:
        if UNIT_DIR in Path(str(item.fspath)).parents:
            wanted = [name for name in getattr(item, "fixturenames", ()) if _serves(item, name)]
            if wanted:
                offenders.append(f"{item.nodeid} asks for {', '.join(sorted(wanted))}")
    if offenders:
        raise pytest.UsageError(
            "unit tests take no server fixtures (move them to tests/):\n" + "\n".join(offenders)
        )


def _serves(item, name: str) -> bool:
    """Whether `name`, as this test resolves it, is an integration fixture that needs a server
    (a unit test's own fixture of the same name is fine)."""
    if name not in SERVER_FIXTURES:
        return False
    definitions = item._fixtureinfo.name2fixturedefs.get(name)
    return (
        bool(definitions)
        and UNIT_DIR not in Path(definitions[-1].func.__code__.co_filename).parents
    )


class ServerUsed(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _no_servers(monkeypatch):
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise ServerUsed(f"a unit test connected to {address}: that belongs in tests/")
        return real_connect(sock, address)

    def popen(*args, **kwargs):
        raise ServerUsed(f"a unit test started a process {args[:1]}: that belongs in tests/")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(subprocess.Popen, "__init__", popen)


@pytest.fixture
def intake(monkeypatch) -> MemoryIntake:
    """The unit tier's intake: IntakeStreams on fakeredis, with a clock the test moves."""
    return memory_intake(monkeypatch)
