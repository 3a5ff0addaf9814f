"""`EchoServer`: an RFC 862 echo service on `tornado.tcpserver.TCPServer`."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any, TypedDict, Unpack

from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpserver import TCPServer

from tornado_echo._fastpath import stream_class
from tornado_echo.echo import ByteEcho, ProtocolFactory
from tornado_echo.halfclose import HalfCloseIOStream, chunk_reader
from tornado_echo.lifecycle import (
    LINGER_TIMEOUT,
    ConnectionTracker,
    ServerLifecycle,
    format_address,
    log_connection_error,
    next_time_slice,
    time_slice_end,
)

#: Bytes asked for per read when the server was given no ``read_chunk_size``
#: (the same as `.IOStream`'s own default).
DEFAULT_CHUNK_SIZE = 65536


class TCPServerOptions(TypedDict, total=False):
    """The `.TCPServer` constructor arguments our servers pass through."""

    ssl_options: dict[str, Any] | ssl.SSLContext | None
    max_buffer_size: int | None
    read_chunk_size: int | None


class TrackedTCPServer(ServerLifecycle, TCPServer):
    """A `.TCPServer` that tracks its connections and always closes them.

    The shared base of `EchoServer` and `.LineServer`: ``handle_stream``
    registers the stream, turns on TCP_NODELAY, runs `serve_stream`, logs
    how it ended, and closes the stream in ``finally`` (Tornado does not
    close a stream whose ``handle_stream`` raised). Subclasses implement
    `serve_stream`.

    .. versionadded:: 0.1.0
    """

    def __init__(self, **options: Unpack[TCPServerOptions]) -> None:
        super().__init__(**options)
        self._connections = ConnectionTracker()

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        """Serve one connection until it ends, then always close it."""
        stream = self._adopt(stream)
        self._connections.add(stream)
        try:
            if stream.socket.family in (socket.AF_INET, socket.AF_INET6):
                stream.set_nodelay(True)
            await self.serve_stream(stream, address)
            if isinstance(stream, HalfCloseIOStream):
                await stream.finish(LINGER_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - logged; others keep being served
            log_connection_error(address, exc)
        finally:
            stream.close()
            self._connections.discard(stream)

    async def serve_stream(self, stream: IOStream, address: Any) -> None:
        """Talk to one client; returning or raising ends the connection."""
        raise NotImplementedError()

    def _adopt(self, stream: IOStream) -> IOStream:
        # TCPServer builds a plain IOStream, which closes the socket at EOF.
        # It has not touched the IOLoop yet, so a HalfCloseIOStream can take
        # over its socket and keep it writable after the client's FIN.
        # (SSLIOStream registers for its handshake at once, so TLS
        # connections keep their stream, and their EOF is final.)
        if type(stream) is IOStream:
            return stream_class()(
                stream.socket,
                max_buffer_size=self.max_buffer_size,
                read_chunk_size=self.read_chunk_size,
            )
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

    ``protocol`` decides what is sent back: `.ByteEcho` (the default) echoes
    every byte; `.LineEcho` echoes line by line, with a length cap, as
    ``tornado-echo --lines`` does. It is called once per connection with the
    peer's address. The other arguments are `.TCPServer`'s.

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.2.0
       The ``protocol`` argument; the stream is a `.HalfCloseIOStream`.
    """

    def __init__(
        self,
        *,
        protocol: ProtocolFactory = ByteEcho,
        **options: Unpack[TCPServerOptions],
    ) -> None:
        super().__init__(**options)
        self.protocol = protocol

    async def serve_stream(self, stream: IOStream, address: Any) -> None:
        """Echo ``stream`` until the protocol is finished (the hot path)."""
        protocol = self.protocol(format_address(address))
        chunk_size = self.read_chunk_size or DEFAULT_CHUNK_SIZE
        read = chunk_reader(stream)
        slice_end = time_slice_end()
        while not protocol.finished:
            try:
                data = await read(chunk_size)
            except StreamClosedError as exc:
                if exc.real_error is not None:
                    raise
                # The client's FIN: the protocol may still owe a last answer.
                data = b""
            out = protocol.receive_data(data)
            if out:
                self._buffered += len(out)
                try:
                    await stream.write(out)
                finally:
                    self._buffered -= len(out)
            if time.monotonic() >= slice_end:
                slice_end = await next_time_slice()
