"""The gateway survives idle and slow clients (issue #17, point 6), with real sockets on
loopback against the served gateway (uvicorn with the gateway's protocol, as
`queue-pipelines gateway` serves it): 300 idle sockets and 300 that send half a request line
leave /health/live and POST /v1/jobs answering; a request head that never completes is closed
at its deadline; an idle kept-alive connection at the keep-alive timeout; the connection cap
drops waiting connections first and answers 503 only when every connection is busy."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest
import redis

from queue_pipelines.gateway.app import build_app
from queue_pipelines.gateway.config import (
    DEFAULT_HEADER_TIMEOUT_SECONDS,
    DEFAULT_KEEPALIVE_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONNECTIONS,
    GatewaySettings,
    JWTSettings,
    settings_from_env,
)
from tests.gateway.test_jobs import SECRET, claims, hs256, payment_envelope
from tests.support.gateway_server import serve

IDLE_SOCKETS = 300
SLOW_SOCKETS = 300


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


def make_settings(key_prefix: str, **extra) -> GatewaySettings:
    return GatewaySettings(
        jwt=JWTSettings(algorithm="HS256", key=SECRET),
        stripe_webhook_secret=None,
        key_prefix=key_prefix,
        **extra,
    )


@contextlib.contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    """Client sockets this test opens, every one closed when it ends."""
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def connect(url: str, opened: list[socket.socket]) -> socket.socket:
    address = urlparse(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=5)
    opened.append(sock)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """The server closed its side (EOF or reset), seen without waiting; what it sent before
    (a 408 or 503) is read and dropped."""
    while select.select([sock], [], [], 0)[0]:
        try:
            if not sock.recv(65536):
                return True
        except OSError:
            return True
    return False


def read_until_closed(sock: socket.socket, deadline_seconds: float) -> tuple[bytes, float]:
    """All the server sends until it closes, and how long that took; bounded."""
    started = time.monotonic()
    sock.settimeout(deadline_seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received, time.monotonic() - started


def submit(url: str, tenant: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/jobs",
        json=payment_envelope(tenant),
        headers={"Authorization": f"Bearer {hs256(claims(tenant))}"},
        timeout=30,
    )


def test_the_limits_come_from_the_environment():
    base = {"GATEWAY_JWT_SECRET": SECRET}
    defaults = settings_from_env(base)
    assert (
        defaults.header_timeout_seconds,
        defaults.keepalive_timeout_seconds,
        defaults.max_connections,
    ) == (
        DEFAULT_HEADER_TIMEOUT_SECONDS,
        DEFAULT_KEEPALIVE_TIMEOUT_SECONDS,
        DEFAULT_MAX_CONNECTIONS,
    )
    configured = settings_from_env(
        {
            **base,
            "GATEWAY_HEADER_TIMEOUT_SECONDS": "2.5",
            "GATEWAY_KEEPALIVE_TIMEOUT_SECONDS": "7",
            "GATEWAY_MAX_CONNECTIONS": "1000",
        }
    )
    assert (
        configured.header_timeout_seconds,
        configured.keepalive_timeout_seconds,
        configured.max_connections,
    ) == (2.5, 7.0, 1000)


def test_idle_and_slow_header_sockets_leave_the_gateway_answering(
    client, instance, key_prefix, tenant
):
    settings = make_settings(key_prefix)  # the defaults: 256 connections, 10 s per head
    assert settings.max_connections < IDLE_SOCKETS + SLOW_SOCKETS
    with serve(build_app(settings, client, instance), settings) as url, sockets() as opened:
        idle = [connect(url, opened) for _ in range(IDLE_SOCKETS)]
        slow = []
        for _ in range(SLOW_SOCKETS):
            sock = connect(url, opened)
            with contextlib.suppress(OSError):  # already dropped to make room: fine
                sock.sendall(b"GET /health/li")
            slow.append(sock)

        live = httpx.get(f"{url}/health/live", timeout=30)
        accepted = submit(url, tenant)
        live_again = httpx.get(f"{url}/health/live", timeout=30)

        # The server kept no more than its cap: the rest of the 600 were closed on its side
        # (the oldest first), well before their 10 s head deadline.
        deadline = time.monotonic() + 5
        while True:
            dropped = sum(closed_by_server(sock) for sock in idle + slow)
            at_most_open = len(idle) + len(slow) - dropped
            if at_most_open <= settings.max_connections or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    assert accepted.status_code == 202, accepted.text
    assert live_again.status_code == 200
    assert at_most_open <= settings.max_connections, (dropped, at_most_open)
    assert client.xlen(f"{key_prefix}:intake:payment") == 1


def test_a_request_head_that_never_completes_is_closed_at_its_deadline(
    client, instance, key_prefix
):
    settings = make_settings(key_prefix, header_timeout_seconds=0.5)
    with serve(build_app(settings, client, instance), settings) as url, sockets() as opened:
        slow = connect(url, opened)
        slow.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        idle = connect(url, opened)
        answered, slow_took = read_until_closed(slow, 10)
        silent, idle_took = read_until_closed(idle, 10)
        live = httpx.get(f"{url}/health/live", timeout=10)
    assert answered.startswith(b"HTTP/1.1 408 "), answered
    assert silent == b""  # it sent nothing, it is told nothing
    assert 0.4 < slow_took < 5 and idle_took < 5
    assert live.status_code == 200


def test_an_idle_kept_alive_connection_is_closed_at_the_keep_alive_timeout(
    client, instance, key_prefix
):
    settings = make_settings(key_prefix, keepalive_timeout_seconds=0.5)
    with serve(build_app(settings, client, instance), settings) as url, sockets() as opened:
        sock = connect(url, opened)
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        received, took = read_until_closed(sock, 10)
    assert received.startswith(b"HTTP/1.1 200 ") and b'{"status":"alive"}' in received
    assert took < 5


def test_a_kept_alive_connection_gets_a_head_deadline_per_request(client, instance, key_prefix):
    settings = make_settings(key_prefix, header_timeout_seconds=0.5, keepalive_timeout_seconds=5)
    with serve(build_app(settings, client, instance), settings) as url, sockets() as opened:
        sock = connect(url, opened)
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        # The second request's head starts and never completes.
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHo")
        received, took = read_until_closed(sock, 10)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"HTTP/1.1 408 " in received
    assert took < 4


def _busy_request(url: str, tenant: str, opened: list[socket.socket]) -> socket.socket:
    """A POST whose body stops arriving: its request stays in progress for the body timeout."""
    sock = connect(url, opened)
    sock.sendall(
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {hs256(claims(tenant))}\r\n".encode()
        + b'Content-Length: 1000\r\n\r\n{"type": '
    )
    return sock


def _status(sock: socket.socket) -> int:
    sock.settimeout(10)
    data = sock.recv(65536)
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1") else 0


def test_at_the_cap_waiting_connections_make_room_and_busy_ones_do_not(
    client, instance, key_prefix, tenant
):
    settings = make_settings(key_prefix, max_connections=3, body_timeout_seconds=5)
    with serve(build_app(settings, client, instance), settings) as url, sockets() as opened:
        # Three idle connections fill the cap; a request still finds room.
        idle = [connect(url, opened) for _ in range(3)]
        time.sleep(0.2)
        room = httpx.get(f"{url}/health/live", timeout=10)
        deadline = time.monotonic() + 5
        while not any(closed_by_server(s) for s in idle) and time.monotonic() < deadline:
            time.sleep(0.05)
        dropped_idle = sum(closed_by_server(s) for s in idle)
        for sock in idle:
            sock.close()

        # Three requests in progress fill it: the next request is answered 503.
        busy = [_busy_request(url, tenant, opened) for _ in range(3)]
        time.sleep(0.3)
        extra = connect(url, opened)
        extra.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        refused = _status(extra)
        # Their bodies never finish: each is answered 408 at the body deadline, and the
        # gateway answers again.
        timed_out = [_status(sock) for sock in busy]
        after = httpx.get(f"{url}/health/live", timeout=10)
    assert room.status_code == 200
    assert dropped_idle >= 1
    assert refused == 503
    assert timed_out == [408, 408, 408]
    assert after.status_code == 200
