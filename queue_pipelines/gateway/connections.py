"""uvicorn's h11 protocol with the gateway's connection limits.

uvicorn alone gives a connection that never sends a complete request head no deadline at all,
and its `limit_concurrency` counts such connections: a few hundred idle or slow-header sockets
made every route, /health/live included, answer 503 for as long as they stayed open. Here:

- a deadline for the request head (request line and headers): it runs from the moment the
  connection opens, or from the first byte of the next request on a kept-alive connection;
  past it the connection is closed (with a 408 when part of a head had arrived);
- the keep-alive timeout stays uvicorn's (`timeout_keep_alive`);
- a cap on open connections. At the cap, the connection that has waited longest for a request
  head (idle, slow, or kept alive between requests) is closed to make room: such connections
  cost nothing to drop and are what a flood is made of. Only when every open connection holds
  a request in progress does the newcomer's request get uvicorn's 503.
"""

from __future__ import annotations

import asyncio
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def _plain_response(status: str, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


HEAD_TIMEOUT_RESPONSE = _plain_response("408 Request Timeout", "request head too slow")
DROPPED_AT_CAP_RESPONSE = _plain_response("503 Service Unavailable", "too many connections")


class LimitedH11Protocol(H11Protocol):
    """Set the two limits on a subclass (`limited_h11_protocol`): uvicorn builds one protocol
    per connection from the class it is given."""

    header_timeout_seconds: float = 10.0
    max_connections: int = 256

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's own check counts idle connections: the cap is enforced here instead, and
        # this is set to 0 only for a request that finds every connection busy (uvicorn then
        # answers it 503).
        self.limit_concurrency = None
        self._head_deadline: asyncio.TimerHandle | None = None
        self._waiting_since = time.monotonic()

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._waiting_since = time.monotonic()
        self._head_deadline = self.loop.call_later(
            self.header_timeout_seconds, self._head_timed_out
        )
        self._make_room()

    def data_received(self, data: bytes) -> None:
        if self._waiting_for_head():
            # The head may complete in this chunk: decide now whether its request finds room.
            self.limit_concurrency = None if self._make_room() else 0
        super().data_received(data)
        self._follow_request_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn's keep-alive timer runs until the next request's first byte.
        self._waiting_since = time.monotonic()
        self._follow_request_state()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    # --- the limits -----------------------------------------------------------------------

    def _waiting_for_head(self) -> bool:
        """Open, and no request in progress: before the first request, or between two (the
        last one answered, though the rest of its body may still be on its way)."""
        if self.transport is None or self.transport.is_closing():
            return False
        answered = self.cycle is not None and self.cycle.response_complete
        return self.conn.their_state is h11.IDLE or answered

    def _follow_request_state(self) -> None:
        if not self._waiting_for_head():
            self._disarm_head_deadline()
        elif self._head_deadline is None and self.timeout_keep_alive_task is None:
            # Bytes of a next request on a kept-alive connection: its head's deadline starts.
            self._head_deadline = self.loop.call_later(
                self.header_timeout_seconds, self._head_timed_out
            )

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._waiting_for_head():
            self._drop(HEAD_TIMEOUT_RESPONSE)

    def _drop(self, response: bytes) -> None:
        """Close a connection that has no request in progress; answer only one that sent
        part of a head (a silent socket gets no bytes it did not ask for)."""
        self._disarm_head_deadline()
        if self.conn.trailing_data[0]:
            self.transport.write(response)
        self.transport.close()

    def _make_room(self) -> bool:
        """True when this connection fits under the cap, after closing the connection that
        has waited longest for a request head if need be."""
        open_connections = [c for c in self.connections if not c.transport.is_closing()]
        if len(open_connections) <= self.max_connections:
            return True
        waiting = [
            c
            for c in open_connections
            if c is not self and isinstance(c, LimitedH11Protocol) and c._waiting_for_head()
        ]
        if not waiting:
            return False
        min(waiting, key=lambda c: c._waiting_since)._drop(DROPPED_AT_CAP_RESPONSE)
        return True


def limited_h11_protocol(header_timeout_seconds: float, max_connections: int) -> type:
    """The protocol class to hand uvicorn as `http=`, with these limits."""
    return type(
        "GatewayH11Protocol",
        (LimitedH11Protocol,),
        {"header_timeout_seconds": header_timeout_seconds, "max_connections": max_connections},
    )
