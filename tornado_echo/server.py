"""`EchoServer`: an RFC 862 echo service on `tornado.tcpserver.TCPServer`."""

from __future__ import annotations

import socket
import ssl
from typing import Any

from tornado.iostream import IOStream
from tornado.tcpserver import TCPServer

from tornado_echo.lifecycle import (
    ConnectionTracker,
    ServerLifecycle,
    log_connection_error,
)

#: Bytes asked for per read when the server was given no ``read_chunk_size``
#: (the same as `.IOStream`'s own default).
DEFAULT_CHUNK_SIZE = 65536


class TrackedTCPServer(ServerLifecycle, TCPServer):
    """A `.TCPServer` that tracks its connections and always closes them.

    The shared base of `EchoServer` and `.LineServer`: ``handle_stream``
    registers the stream, turns on TCP_NODELAY, runs `serve_stream`, logs
    how it ended, and closes the stream in ``finally`` (Tornado does not
    close a stream whose ``handle_stream`` raised). Subclasses implement
    `serve_stream`.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        ssl_options: dict[str, Any] | ssl.SSLContext | None = None,
        max_buffer_size: int | None = None,
        read_chunk_size: int | None = None,
    ) -> None:
        super().__init__(
            ssl_options=ssl_options,
            max_buffer_size=max_buffer_size,
            read_chunk_size=read_chunk_size,
        )
        self._connections = ConnectionTracker()

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        """Serve one connection until it ends, then always close it."""
        stream = self._adopt(stream)
        self._connections.add(stream)
        try:
            if stream.socket.family in (socket.AF_INET, socket.AF_INET6):
                stream.set_nodelay(True)
            await self.serve_stream(stream, address)
        except Exception as exc:  # noqa: BLE001 - logged; others keep being served
            log_connection_error(address, exc)
        finally:
            stream.close()
            self._connections.discard(stream)

    async def serve_stream(self, stream: IOStream, address: Any) -> None:
        """Talk to one client; returning or raising ends the connection."""
        raise NotImplementedError()

    def _adopt(self, stream: IOStream) -> IOStream:
        # Lets a subclass swap in another stream class before any I/O.
        return stream


class EchoServer(TrackedTCPServer):
    r"""A TCP echo server: every byte a client sends is sent back.

    Each connection runs one loop: a partial read of up to one chunk, then
    an awaited write of the same bytes. Awaiting the write is the
    backpressure: a client that sends but never reads stops being read from,
    so the server holds at most one chunk for it. When the client half-closes
    (``shutdown(SHUT_WR)``), everything it sent before has already been
    written back, and the server closes the connection.

    Unlike a bare `.TCPServer`, the server tracks its connections:
    `connection_count` tells how many are open and `shutdown` drains them.
    A handler that fails is logged once with the peer address, and its stream
    is always closed.

    Create it inside a running event loop::

        import asyncio
        from tornado_echo import EchoServer

        async def main():
            server = EchoServer()
            server.listen(10000, "127.0.0.1")
            await asyncio.sleep(3600)
            await server.shutdown(timeout=5)

        asyncio.run(main())

    The constructor takes `.TCPServer`'s ``ssl_options``, ``max_buffer_size``
    and ``read_chunk_size``.

    .. versionadded:: 0.1.0
    """

    async def serve_stream(self, stream: IOStream, address: Any) -> None:
        """Echo ``stream`` until the peer closes it (the hot path)."""
        chunk_size = self.read_chunk_size or DEFAULT_CHUNK_SIZE
        while True:
            data = await stream.read_bytes(chunk_size, partial=True)
            self._buffered += len(data)
            try:
                await stream.write(data)
            finally:
                self._buffered -= len(data)
