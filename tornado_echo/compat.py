"""The classic raw fd-handler echo server, ported to Python 3 and fixed.

Tornado's old examples showed an echo server written directly against the
`.IOLoop`: a non-blocking listening socket, ``add_handler`` for accepts, one
handler per client that flips between READ and WRITE interest with
``update_handler``, a queue of outgoing messages per connection, and
``remove_handler`` on close. `RawEchoServer` keeps that structure so it can be
read side by side with `.EchoServer`, which does the same job through
`.IOStream`:

==================================  ==========================================
classic example                     here
==================================  ==========================================
``add_handler(listen_fd, ...)``     `RawEchoServer.add_sockets`
``connection_ready`` (accept)       the shared acceptor, then
                                    ``RawEchoServer._on_accepted``
per-client ``handle_events``        ``_RawConnection._on_events``
``message_queue``                   ``_RawConnection._queue`` (a deque)
``update_handler(fd, WRITE)``       ``_RawConnection._update_interest``
``remove_handler`` + ``close``      ``_RawConnection.close``
read, queue, WRITE, send next turn  ``_RawConnection._send`` sends at once;
                                    WRITE only after a partial send, as
                                    asyncio's transports do
==================================  ==========================================

What the classic version got wrong, and how it is fixed here:

* It accepted one connection per event with ``listen(5)``. We accept in a
  loop until ``EAGAIN``, at most ``accepts_per_event`` at a time so one busy
  listener cannot starve established connections, with a backlog of 128.
  Running out of file descriptors pauses accepting, with a growing backoff,
  instead of spinning on a listener that stays readable (the acceptor
  every server shares).
* It assumed ``send`` writes everything. A partial send keeps the unsent
  remainder at the head of the queue.
* It treated ``EAGAIN`` as an error. Spurious readiness is now ignored.
* On EOF it closed at once, dropping queued data. Now it stops reading,
  flushes the queue and then closes, so a half-closed client gets back
  everything it sent (and, in line mode, its unterminated tail).
* A reset or broken pipe on one connection closes only that connection,
  with one DEBUG line.
* It closed the socket and then called ``remove_handler``. After ``close``
  the fd is -1 and the removal misses, leaving a handler for a dead fd; the
  handler is now removed first.
* When the server decides to close first (a line-mode client sent an
  overlong line), closing with the client's input unread would make the
  kernel send a reset and destroy replies the client has yet to read. The
  server sends FIN and drops the client's input until it closes too, for at
  most a couple of seconds.
* It queued every answer and sent it on the next loop turn, after an
  ``update_handler`` to WRITE and before another back to READ: two
  ``epoll_ctl`` calls and a loop turn per request. Now the answer is sent
  in the READ handler that produced it; only the part the kernel did not
  take is queued, and the queue (a ``deque``) exists only then, so an idle
  connection costs about 1.3 KB.
* It read without limit into the queue. Reading stops while the queue is
  above ``high_water_mark`` bytes, so a client that never reads cannot make
  the server's memory grow.
* It relied on ``IOLoop.ERROR``, which the asyncio-based `.IOLoop` never
  delivers; errors surface as READ/WRITE readiness plus a failing
  ``recv``/``send``. An exception escaping a raw handler is only logged by
  asyncio and leaves the handler registered, spinning on a readable fd, so
  every handler here catches everything and closes its connection.

Usage mirrors `.EchoServer`, inside a running event loop::

    import asyncio
    from tornado_echo.compat import RawEchoServer

    async def main():
        server = RawEchoServer()
        server.listen(10000, "127.0.0.1")
        await asyncio.sleep(3600)
        await server.shutdown(timeout=5)

    asyncio.run(main())

TLS is not supported here; use `.EchoServer` for that.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import collections
import socket
from collections.abc import Iterable
from socket import socket as Socket
from typing import TYPE_CHECKING, Any

from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets

from tornado_echo._lifecycle import (
    DEFAULT_CHUNK_SIZE,
    LINGER_TIMEOUT,
    ServerLifecycle,
    Slot,
)
from tornado_echo._logs import format_address, log_connection_error
from tornado_echo._moved import renamed_argument
from tornado_echo._readiness import raise_pending_error
from tornado_echo.echo import ByteEcho, EchoFactory
from tornado_echo.limits import Limits

if TYPE_CHECKING:
    from tornado_echo.proxy_header import ProxyHeader
    from tornado_echo.proxy_protocol import ProxyProtocol


class RawEchoServer(ServerLifecycle):
    """An echo server built on raw `.IOLoop` fd handlers.

    It behaves like `.EchoServer` (same echo, half-close, backpressure,
    limits, timeouts, stats and ``shutdown``) and offers the
    same lifecycle surface: `listen`, `add_sockets`,
    ``stop``, ``shutdown``,
    ``stats`` and ``connection_count``.

    ``echo`` decides what is sent back, as for `.EchoServer` (the same
    `.ByteEcho` or `.LineEcho` objects run on both). ``high_water_mark`` is
    how many queued bytes per connection stop the server from reading more
    from that client; ``read_chunk_size`` is the most one ``recv`` asks for;
    ``limits``, ``proxy_protocol`` and ``log_connections`` are as for
    `.EchoServer`.

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.3.0
       The ``limits`` argument and ``stats``.
    """

    def __init__(
        self,
        *,
        echo: EchoFactory = ByteEcho,
        protocol: EchoFactory | None = None,
        read_chunk_size: int = DEFAULT_CHUNK_SIZE,
        high_water_mark: int = DEFAULT_CHUNK_SIZE,
        accepts_per_event: int = 128,
        limits: Limits | None = None,
        proxy_protocol: ProxyProtocol | bool | None = None,
        log_connections: bool = False,
    ) -> None:
        for name, value in (
            ("read_chunk_size", read_chunk_size),
            ("high_water_mark", high_water_mark),
            ("accepts_per_event", accepts_per_event),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value!r}")
        ServerLifecycle.__init__(
            self,
            limits=limits,
            proxy_protocol=proxy_protocol,
            log_connections=log_connections,
            accepts_per_event=accepts_per_event,
        )
        #: What it echoes: called once per connection with the peer's address.
        self.echo = renamed_argument(
            "RawEchoServer", "protocol", "echo", protocol, echo
        )
        self.read_chunk_size = read_chunk_size
        self.high_water_mark = high_water_mark
        self._io_loop: IOLoop | None = None

    def listen(
        self,
        port: int,
        address: str | None = None,
        family: socket.AddressFamily = socket.AF_UNSPEC,
        backlog: int = 128,
        reuse_port: bool = False,
    ) -> None:
        """Bind to ``port`` on ``address`` and start accepting.

        The arguments mean what they mean for `.TCPServer.listen`.
        """
        self.add_sockets(
            bind_sockets(port, address, family, backlog, reuse_port=reuse_port)
        )

    @property
    def loop(self) -> IOLoop:
        """The `.IOLoop` it accepts on, which its connections register with."""
        if self._io_loop is None:
            raise RuntimeError("the server is not listening yet")
        return self._io_loop

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """Start accepting on already-bound listening sockets."""
        self._io_loop = IOLoop.current()
        self._start_accepting(sockets)

    def add_socket(self, sock: socket.socket) -> None:
        """Singular version of `add_sockets`."""
        self.add_sockets([sock])

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
        _RawConnection(self, sock, address, slot)


class _RawConnection:
    """One client: a socket, its outgoing queue and its READ/WRITE interest.

    The hot path is `_on_readable`: ``recv``, the protocol, and a ``send``
    of the answer right away, in the same event. Only a partial send queues
    the rest and asks for WRITE, and only the queue growing past the
    high-water mark drops READ, so a client that keeps up costs no
    ``update_handler`` call at all. The queue exists only while something
    is queued, which keeps an idle connection small.
    """

    __slots__ = (
        "_closed",
        "_echo",
        "_interest",
        "_linger_timer",
        "_peer_eof",
        "_queue",
        "_queued",
        "_server",
        "_sock",
        "address",
        "bytes_in",
        "bytes_out",
    )

    def __init__(
        self, server: RawEchoServer, sock: socket.socket, address: Any, slot: Slot
    ) -> None:
        self._server = server
        self._sock = sock
        self.address = address
        self._echo = server.echo(format_address(address))
        self._queue: collections.deque[memoryview] | None = None
        self._queued = 0
        self._peer_eof = False
        self._linger_timer: object | None = None
        self._closed = False
        self.bytes_in = 0
        self.bytes_out = 0
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._interest = IOLoop.READ
        server.loop.add_handler(sock, self._on_events, IOLoop.READ)
        server.track_connection(self, slot)
        if hasattr(self._echo, "lines"):
            server.count_lines(self, self._echo)

    @property
    def socket(self) -> Socket:
        return self._sock

    def writing(self) -> bool:
        """True while some of our answer waits for the peer to read."""
        return self._queue is not None

    def _on_events(self, sock: Socket, events: int) -> None:
        # Nothing may escape: on the asyncio IOLoop an exception here is
        # merely logged and the handler stays registered, spinning.
        try:
            if events & IOLoop.READ:
                self._on_readable()
            if events & IOLoop.WRITE and not self._closed:
                self._on_writable()
        except Exception as exc:  # noqa: BLE001 - see above
            log_connection_error(self.address, exc)
            self.close()

    def _on_readable(self) -> None:
        protocol = self._echo
        if self._linger_timer is not None or protocol.finished:
            # Lingering, or a READ event queued before interest changed.
            self._drop_input()
            return
        if self._queue is not None and self._queued >= self._server.high_water_mark:
            return  # the same: READ was dropped for backpressure
        try:
            data = self._sock.recv(self._server.read_chunk_size)
        except (BlockingIOError, InterruptedError):
            return
        self.bytes_in += len(data)
        out = protocol.receive_data(data)
        if out:
            if self._queue is None:
                self._send(out)
            else:
                self._enqueue(memoryview(out))
        elif data:
            # Nothing to send, so nothing would notice a reset that came
            # with these bytes, and uvloop sends no event after it.
            raise_pending_error(self._sock)
        if not data:
            self._peer_eof = True
        if protocol.finished:
            self._stop_reading()

    def _send(self, out: bytes) -> None:
        # Straight after the read, as asyncio's transports do: the classic
        # example's WRITE round trip cost two update_handler calls and a
        # loop turn on every request.
        try:
            sent = self._sock.send(out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        self.bytes_out += sent
        if sent < len(out):
            self._queue = collections.deque()
            self._enqueue(memoryview(out)[sent:])

    def _enqueue(self, view: memoryview) -> None:
        assert self._queue is not None
        self._queue.append(view)
        self._queued += len(view)
        self._server.add_buffered(len(view))
        self._update_interest()

    def _on_writable(self) -> None:
        queue = self._queue
        if queue is None:
            return  # a WRITE event queued before interest changed
        while queue:
            head = queue[0]
            try:
                sent = self._sock.send(head)
            except (BlockingIOError, InterruptedError):
                break
            self.bytes_out += sent
            self._queued -= sent
            self._server.add_buffered(-sent)
            if sent < len(head):
                queue[0] = head[sent:]
                break
            queue.popleft()
        if not queue:
            self._queue = None
            if self._echo.finished:
                self._stop_reading()
                return
        self._update_interest()

    def _stop_reading(self) -> None:
        """The protocol is done: flush what is queued, then close or linger."""
        if self._queue is not None:
            self._update_interest()  # WRITE only, until the queue drains
        elif self._peer_eof:
            self.close()
        elif self._linger_timer is None:
            self._start_lingering()

    def _update_interest(self) -> None:
        interest = 0
        if self._linger_timer is not None or (
            not self._echo.finished and self._queued < self._server.high_water_mark
        ):
            interest = IOLoop.READ
        if self._queue is not None:
            interest |= IOLoop.WRITE
        if interest != self._interest:
            self._server.loop.update_handler(self._sock, interest)
            self._interest = interest

    def _start_lingering(self) -> None:
        # We are done but the client has not closed: closing now, with its
        # input unread, would reset the connection and destroy replies it
        # has yet to read. Send FIN, drop its input until it closes too.
        self._sock.shutdown(socket.SHUT_WR)
        self._linger_timer = self._server.loop.call_later(LINGER_TIMEOUT, self.close)
        self._update_interest()

    def _drop_input(self) -> None:
        if self._linger_timer is None:
            return
        try:
            data = self._sock.recv(self._server.read_chunk_size)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self.close()
        else:
            raise_pending_error(self._sock)  # as in _on_readable

    def close(self) -> None:
        """Unregister, then close; idempotent."""
        if self._closed:
            return
        self._closed = True
        io_loop = self._server.loop
        if self._linger_timer is not None:
            io_loop.remove_timeout(self._linger_timer)
        # Before close(): afterwards fileno() is -1 and the removal would
        # silently miss, leaving a handler registered for a dead fd.
        io_loop.remove_handler(self._sock)
        self._sock.close()
        self._server.add_buffered(-self._queued)
        self._queued = 0
        self._queue = None
        self._server.untrack_connection(self)
