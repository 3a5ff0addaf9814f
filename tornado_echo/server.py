"""`EchoServer`: an RFC 862 echo service on `tornado.tcpserver.TCPServer`."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from tornado import gen
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError
from tornado.netutil import ssl_wrap_socket
from tornado.tcpserver import TCPServer

from tornado_echo._fairness import LoopShare, Turn
from tornado_echo._fastpath import stream_class
from tornado_echo._halfclose import CountingIOStream, HalfClosingStream, chunk_reader
from tornado_echo._lifecycle import (
    DEFAULT_CHUNK_SIZE,
    LINGER_TIMEOUT,
    ServerLifecycle,
    Slot,
)
from tornado_echo._logs import conn_log, format_address, log_connection_error
from tornado_echo._moved import renamed_argument
from tornado_echo.echo import ByteEcho, EchoFactory
from tornado_echo.limits import Limits
from tornado_echo.tls import TLSStream

if TYPE_CHECKING:
    from tornado_echo.proxy_header import ProxyHeader
    from tornado_echo.proxy_protocol import ProxyProtocol

__all__ = ["DEFAULT_CHUNK_SIZE", "EchoServer", "TCPServerOptions", "TrackedTCPServer"]


class TCPServerOptions(TypedDict, total=False):
    """The constructor arguments shared by our `.TCPServer` subclasses.

    ``limits`` is a `.Limits`; ``proxy_protocol`` (``True`` or a
    `.ProxyProtocol`) makes every connection start with a PROXY protocol
    header; ``log_connections`` logs each connection's open and close at
    INFO. The others are `.TCPServer`'s.
    """

    ssl_options: dict[str, Any] | ssl.SSLContext | None
    max_buffer_size: int | None
    read_chunk_size: int | None
    limits: Limits | None
    proxy_protocol: ProxyProtocol | bool | None
    log_connections: bool


# A TLS client that connects and leaves at once (a port scan) makes the wrap
# fail with these; there is nothing to serve and nothing worth logging.
_WRAP_GONE = frozenset({errno.ECONNABORTED, errno.EINVAL, errno.ENOTCONN})


def _raise_result(future: Any) -> None:
    future.result()


class TrackedTCPServer(ServerLifecycle, TCPServer):
    """A `.TCPServer` that tracks, limits and always closes its connections.

    The shared base of `EchoServer` and `.LineServer`. Accepting goes
    through the lifecycle's own acceptor rather than Tornado's accept
    handler, which spins and logs a traceback per attempt when descriptors
    run out. ``handle_stream`` registers the stream, turns on TCP_NODELAY,
    finishes the TLS handshake within ``limits.handshake_timeout``, runs
    `serve_stream`, logs how it ended, and closes the stream in ``finally``
    (Tornado does not close a stream whose ``handle_stream`` raised).
    Subclasses implement `serve_stream`.

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.3.0
       The ``limits`` argument, ``stats``, and calm accepts.
    """

    def __init__(
        self,
        *,
        ssl_options: dict[str, Any] | ssl.SSLContext | None = None,
        max_buffer_size: int | None = None,
        read_chunk_size: int | None = None,
        limits: Limits | None = None,
        proxy_protocol: ProxyProtocol | bool | None = None,
        log_connections: bool = False,
    ) -> None:
        # Every keyword is named: a misspelled one, forwarded by a
        # subclass's **options, is a TypeError here rather than ignored.
        for name, value in (
            ("max_buffer_size", max_buffer_size),
            ("read_chunk_size", read_chunk_size),
        ):
            if value is not None and not (
                isinstance(value, int) and not isinstance(value, bool) and value >= 1
            ):
                raise ValueError(f"{name} must be None or at least 1, not {value!r}")
        if not (ssl_options is None or isinstance(ssl_options, (dict, ssl.SSLContext))):
            raise TypeError(
                "ssl_options must be an ssl.SSLContext (see server_context), "
                f"not {type(ssl_options).__name__}"
            )
        # Both bases, each with its own arguments: TCPServer for what it
        # keeps (TLS options, buffer sizes), the lifecycle for the rest.
        TCPServer.__init__(
            self,
            ssl_options=ssl_options,
            max_buffer_size=max_buffer_size,
            read_chunk_size=read_chunk_size,
        )
        ServerLifecycle.__init__(
            self,
            limits=limits,
            proxy_protocol=proxy_protocol,
            log_connections=log_connections,
        )
        self._stream_class = stream_class()
        self._loop_share = LoopShare()

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """Start accepting on already-bound listening sockets.

        Instead of `.TCPServer`'s accept handler: see the class docstring.
        """
        self._start_accepting(sockets)

    def add_socket(self, socket: socket.socket) -> None:
        """Singular version of `add_sockets`."""
        self._start_accepting([socket])

    def stop(self) -> None:
        """Stop accepting and close the listeners; connections keep running.

        See ``shutdown`` to drain them.
        """
        self._stop_accepting()

    def _on_accepted(
        self,
        sock: socket.socket,
        address: Any,
        proxy_header: ProxyHeader | None,
        slot: Slot,
    ) -> None:
        stream: CountingIOStream
        if self.ssl_options is None:
            stream = self._stream_class(
                sock,
                max_buffer_size=self.max_buffer_size,
                read_chunk_size=self.read_chunk_size,
            )
        else:
            try:
                sock = ssl_wrap_socket(
                    sock,
                    self.ssl_options,
                    server_side=True,
                    do_handshake_on_connect=False,
                    # A FIN without close_notify is an error, not the end of
                    # input: `TLSStream` may answer only a real end.
                    suppress_ragged_eofs=False,
                )
            except OSError as exc:
                sock.close()
                if isinstance(exc, ssl.SSLError) or exc.errno in _WRAP_GONE:
                    conn_log.debug(
                        "%s: connection ended: %s", format_address(address), exc
                    )
                    return
                raise
            stream = TLSStream(
                sock,
                max_buffer_size=self.max_buffer_size,
                read_chunk_size=self.read_chunk_size,
            )
        stream.proxy_header = proxy_header
        stream.address = address
        # Now, not in handle_stream, whose first step runs on a later loop
        # turn: a whole backlog accepted in one event must meet the cap.
        self.track_connection(stream, slot)
        future = self.handle_stream(stream, address)
        if future is not None:
            IOLoop.current().add_future(gen.convert_yielded(future), _raise_result)

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        """Serve one connection until it ends, then always close it."""
        stream = self._adopt(stream)
        if not self.is_tracked(stream):
            # Handed to us directly, not through our own accepts.
            if isinstance(stream, CountingIOStream):
                stream.address = address
            self.track_connection(stream)  # type: ignore[arg-type]
        try:
            if stream.socket.family in (socket.AF_INET, socket.AF_INET6):
                stream.set_nodelay(True)
            if isinstance(stream, SSLIOStream) and not await self._handshake(
                stream, address
            ):
                return
            await self.serve_stream(stream, address)
            if isinstance(stream, HalfClosingStream):
                await stream.finish(LINGER_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - logged; others keep being served
            log_connection_error(address, exc)
        finally:
            try:
                if isinstance(stream, HalfClosingStream):
                    stream.end()
                else:
                    stream.close()
            finally:
                self.untrack_connection(stream)  # type: ignore[arg-type]

    async def _handshake(self, stream: SSLIOStream, address: Any) -> bool:
        timeout = self.limits.handshake_timeout or None
        handshake = stream.wait_for_handshake()
        # asyncio.wait, not a timeout around the await: cancelling Tornado's
        # handshake future makes the stream's close() raise CancelledError
        # (Tornado 6.5).
        done, _ = await asyncio.wait([handshake], timeout=timeout)
        if done:
            error = handshake.exception()
            if error is None:
                return True
            reason = str(stream.error or error) or "connection closed"
        else:
            reason = f"not finished within {timeout:g}s"
        self.count_handshake_failure()
        conn_log.debug("%s: TLS handshake failed: %s", format_address(address), reason)
        return False

    async def serve_stream(self, stream: IOStream, address: Any) -> None:
        """Talk to one client; returning or raising ends the connection."""
        raise NotImplementedError()

    def new_turn(self) -> Turn:
        """A connection's share of the loop among this server's: for drivers."""
        return Turn(self._loop_share)

    def _adopt(self, stream: IOStream) -> IOStream:
        # A plain IOStream handed to handle_stream directly (our own accepts
        # build the right class) closes the socket at EOF and counts nothing.
        # It has not touched the IOLoop yet, so one of ours can take over.
        if type(stream) is IOStream:
            return self._stream_class(
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
    ``connection_count`` tells how many are open and
    ``shutdown`` drains them.
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
       The ``protocol`` argument (now ``echo``); a half-closing stream.
    """

    def __init__(
        self,
        *,
        echo: EchoFactory = ByteEcho,
        protocol: EchoFactory | None = None,
        **options: Unpack[TCPServerOptions],
    ) -> None:
        super().__init__(**options)
        #: What it echoes: called once per connection with the peer's address.
        self.echo = renamed_argument("EchoServer", "protocol", "echo", protocol, echo)

    async def serve_stream(self, stream: IOStream, address: Any) -> None:
        """Echo ``stream`` until the protocol is finished (the hot path)."""
        protocol = self.echo(format_address(address))
        if hasattr(protocol, "lines"):
            self.count_lines(stream, protocol)  # type: ignore[arg-type]
        chunk_size = self.read_chunk_size or DEFAULT_CHUNK_SIZE
        read = chunk_reader(stream)
        turn = self.new_turn()
        after_others = False
        while not protocol.finished:
            try:
                data = await read(chunk_size, after_others)
            except StreamClosedError as exc:
                if exc.real_error is not None:
                    raise
                # The client's FIN: the protocol may still owe a last answer.
                data = b""
            # A full read: more is waiting, and the next read would complete
            # without returning to the loop (tornado_echo._fairness).
            full = len(data) == chunk_size
            turn.after_read(full)
            out = protocol.receive_data(data)
            if out:
                self.add_buffered(len(out))
                try:
                    await stream.write(out)
                finally:
                    self.add_buffered(-len(out))
            after_others = full and turn.due()
