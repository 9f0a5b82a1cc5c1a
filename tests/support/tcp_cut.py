"""A TCP relay on loopback in front of a real server (Redis, PostgreSQL) that a test can cut
at an exact moment: `cut()` closes every connection through it and refuses new ones, as a
server that went away does; `restore()` lets connections through again.

    with TcpCut("127.0.0.1", 6379) as redis_cut:
        client = redis.Redis(port=redis_cut.port)
        ...
        redis_cut.cut()
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpCut:
    def __init__(self, host: str, port: int):
        self.upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = False
        self._closed = False
        self.connections = 0  # let through to the server, ever
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut:
                client.close()  # the server is away: the connection ends at once
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
                self.connections += 1
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source, sink)

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._open.discard(sock)

    def cut(self) -> None:
        """From now on, every connection through here is closed and new ones are refused."""
        self._cut = True
        with self._lock:
            sockets = list(self._open)
        self._close(*sockets)

    def restore(self) -> None:
        self._cut = False

    def __enter__(self) -> TcpCut:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closed = True
        self._listener.close()
        self.cut()
