"""What every server does with its connections: track, limit, time out, drain.

`tornado.tcpserver.TCPServer.stop` closes only the listening sockets: open
connections keep running and nothing knows about them. `ServerLifecycle` is
the one base that both drivers (`.EchoServer` and `.LineServer` on
`.IOStream`, `.RawEchoServer` on raw fd handlers) build on. It

* accepts through an `.Acceptor`, which backs off when descriptors run out;
* tracks the live connections (`ConnectionTracker`), which gives
  ``connection_count`` and ``shutdown(timeout)``;
* applies `.Limits`: the connection cap pauses accepting, and a periodic
  sweep closes idle and stalled connections;
* keeps the counters behind `~ServerLifecycle.stats`.

A driver calls ``_track`` when a connection starts, and ``_untrack`` once it
is closed; the connection object (a stream, or a raw connection) satisfies
`Connection`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from tornado.ioloop import PeriodicCallback

from tornado_echo.accept import Acceptor
from tornado_echo.limits import Limits
from tornado_echo.logs import conn_log, format_address, log_connection_error
from tornado_echo.stats import ServerStats

if TYPE_CHECKING:
    from tornado_echo.proxied import HeaderReader, ProxyProtocol
    from tornado_echo.proxy import ProxyHeader

#: Bytes asked for per read when the server was given no ``read_chunk_size``
#: (the same as `.IOStream`'s own default).
DEFAULT_CHUNK_SIZE = 65536

#: When the server ends a connection the client has not closed, how long it
#: keeps reading and dropping the client's input so the close does not turn
#: into a reset that destroys replies the client has yet to read.
LINGER_TIMEOUT = 2.0

# After shutdown force-closes connections, their handlers still need one or
# two loop iterations to run their ``finally`` blocks; wait this long for
# them so callers see a quiescent server, but never hang on a stuck handler.
_FORCED_CLOSE_GRACE = 1.0

# The "limit reached" episode ends, and is logged as over, only once this
# share of the cap is free again: a server hovering at its cap would
# otherwise log a pair of lines for every connection that comes and goes.
_LIMIT_HYSTERESIS = 0.1

_LIMIT = "limit"


class Connection(Protocol):
    """What a server tracks per connection (a stream, or a raw connection).

    ``bytes_in`` and ``bytes_out`` count what went through the socket; the
    two underscored attributes belong to the timeout sweep.
    """

    #: The peer: the client's real address when a PROXY header gave it.
    address: Any
    bytes_in: int
    bytes_out: int
    _sweep_mark: int
    _quiet_since: float

    @property
    def socket(self) -> socket.socket: ...

    def writing(self) -> bool: ...

    def close(self) -> None: ...


class LineCounts(Protocol):
    """Optional per-connection line counters (line protocols have them)."""

    lines: int
    lines_too_long: int


@dataclasses.dataclass(frozen=True, slots=True)
class ShutdownResult:
    """What `ServerLifecycle.shutdown` did.

    ``drained`` connections finished on their own before the deadline;
    ``closed`` ones were still open at the deadline and were closed.
    """

    drained: int
    closed: int


class ConnectionTracker:
    """The live connections of one server, each with its line counters.

    `wait_empty` lets shutdown wait for the set to drain.
    """

    def __init__(self) -> None:
        self._live: dict[Connection, LineCounts | None] = {}
        self._changed: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[Connection]:
        # A copy, because closing a connection while iterating discards it.
        return iter(list(self._live))

    def add(self, conn: Connection) -> None:
        self._live[conn] = None

    def count_lines_of(self, conn: Connection, counts: LineCounts) -> None:
        """Report ``counts.lines`` as ``conn``'s, while it is tracked."""
        if conn in self._live:
            self._live[conn] = counts

    def pop(self, conn: Connection) -> LineCounts | None:
        """Forget ``conn``; returns its line counters, if it had any."""
        counts = self._live.pop(conn, None)
        if not self._live and self._changed is not None:
            self._changed.set()
        return counts

    def line_counts(self) -> Iterator[LineCounts]:
        return (c for c in self._live.values() if c is not None)

    async def wait_empty(self, timeout: float) -> bool:
        """Wait until no connection is left; False if ``timeout`` ran out."""
        if not self._live:
            return True
        if self._changed is None or self._changed.is_set():
            # Created lazily, inside the running loop that awaits it.
            self._changed = asyncio.Event()
        try:
            await asyncio.wait_for(self._changed.wait(), max(timeout, 0.0))
        except TimeoutError:
            return not self._live
        return True


class ServerLifecycle:
    """Base of every server: tracking, limits, timeouts, stats and shutdown.

    Subclasses create ``self._acceptor`` and ``self._connections`` (with
    ``_init_lifecycle``), hand accepted sockets to their drivers, and call
    ``_track`` / ``_untrack`` around each connection's life.
    """

    _connections: ConnectionTracker
    _acceptor: Acceptor

    def _init_lifecycle(
        self,
        limits: Limits | None,
        accepts_per_event: int = 128,
        *,
        proxy_protocol: ProxyProtocol | bool | None = None,
        log_connections: bool = False,
    ) -> None:
        self._connections = ConnectionTracker()
        self._acceptor = Acceptor(self._accepted, per_event=accepts_per_event)
        self._limits = limits or Limits()
        self.proxy_protocol = proxy_protocol
        #: Log one INFO line per connection when it opens and when it closes.
        self.log_connections = log_connections
        self._cap = 0  # resolved when the server starts accepting
        self._sweeper: PeriodicCallback | None = None
        self._at_limit = False
        self._buffered = 0
        self._header_readers: set[HeaderReader] = set()
        self._opened: dict[Connection, float] = {}
        # Totals of closed connections; live ones are added in `stats`.
        self._bytes_in = 0
        self._bytes_out = 0
        self._lines = 0
        self._lines_too_long = 0
        self._total = 0
        self._drained = 0
        self._force_closed = 0
        self._limit_reached = 0
        self._idle_timeouts = 0
        self._write_timeouts = 0
        self._handshake_failures = 0
        self._proxy_rejected = 0

    @property
    def proxy_protocol(self) -> ProxyProtocol | None:
        """The `.ProxyProtocol` settings, or None if no header is expected.

        Assign ``True`` for the defaults (any source, a 5 s header timeout),
        a `.ProxyProtocol`, or ``None``/``False`` to switch it off.

        .. versionadded:: 0.3.0
        """
        return self._proxy_protocol

    @proxy_protocol.setter
    def proxy_protocol(self, value: ProxyProtocol | bool | None) -> None:
        if value is True:
            from tornado_echo.proxied import ProxyProtocol

            value = ProxyProtocol()
        self._proxy_protocol = value or None

    def _accepted(self, sock: socket.socket, address: Any) -> None:
        proxy = self._proxy_protocol
        if proxy is None:
            self._on_accepted(sock, address)
            return
        if not proxy.trusts(address):
            self._proxy_rejected += 1
            conn_log.info(
                "%s: refused: not a trusted PROXY protocol source",
                format_address(address),
            )
            sock.close()
            return
        from tornado_echo.proxied import HeaderReader

        self._header_readers.add(
            HeaderReader(sock, address, proxy, self._after_header, self._bad_header)
        )

    def _after_header(
        self,
        reader: HeaderReader,
        sock: socket.socket,
        address: Any,
        header: ProxyHeader,
    ) -> None:
        self._header_readers.discard(reader)
        try:
            self._on_accepted(sock, address, header)
        except Exception as exc:  # noqa: BLE001 - as the acceptor does
            sock.close()
            log_connection_error(address, exc)

    def _bad_header(self, reader: HeaderReader) -> None:
        self._header_readers.discard(reader)
        self._proxy_rejected += 1

    def _on_accepted(
        self,
        sock: socket.socket,
        address: Any,
        proxy_header: ProxyHeader | None = None,
    ) -> None:
        """Serve an accepted socket (after its PROXY header, if one came)."""
        raise NotImplementedError()

    @property
    def limits(self) -> Limits:
        """The `.Limits` in force; assign a new one before the server listens."""
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self._limits = limits
        if self._cap:
            self._start_limits()

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """Start accepting on already-bound listening sockets."""
        if not self._cap:
            self._start_limits()
        self._acceptor.add(sockets)

    def add_socket(self, sock: socket.socket) -> None:
        """Singular version of `add_sockets`."""
        self.add_sockets([sock])

    def stop(self) -> None:
        """Stop accepting and close the listeners; connections keep running.

        See `shutdown` to drain them.
        """
        self._acceptor.close()
        for reader in list(self._header_readers):
            reader.close()
        self._header_readers.clear()

    @property
    def connection_count(self) -> int:
        """The number of connections currently open."""
        return len(self._connections)

    @property
    def buffered_bytes(self) -> int:
        """Bytes read from clients and not yet handed back to the kernel.

        Because every write is awaited, this stays within about one read
        chunk per connection however fast clients send and however slowly
        they read.
        """
        return self._buffered

    @property
    def stats(self) -> ServerStats:
        """A snapshot of the server's counters (`.ServerStats`).

        .. versionadded:: 0.3.0
        """
        live = list(self._connections)
        counts = list(self._connections.line_counts())
        return ServerStats(
            connections_open=len(live),
            connections_total=self._total,
            connections_drained=self._drained,
            connections_force_closed=self._force_closed,
            bytes_in=self._bytes_in + sum(c.bytes_in for c in live),
            bytes_out=self._bytes_out + sum(c.bytes_out for c in live),
            lines=self._lines + sum(c.lines for c in counts),
            lines_too_long=self._lines_too_long + sum(c.lines_too_long for c in counts),
            limit_reached=self._limit_reached,
            accept_errors=self._acceptor.error_episodes,
            idle_timeouts=self._idle_timeouts,
            write_timeouts=self._write_timeouts,
            handshake_failures=self._handshake_failures,
            proxy_rejected=self._proxy_rejected,
        )

    def _track(self, conn: Connection) -> None:
        conn._sweep_mark = 0
        conn._quiet_since = time.monotonic()
        self._connections.add(conn)
        self._total += 1
        if self.log_connections:
            self._opened[conn] = conn._quiet_since
            conn_log.info("%s: connected", format_address(conn.address))
        if len(self._connections) >= self._cap and self._cap:
            self._acceptor.pause(_LIMIT)
            if not self._at_limit:
                self._at_limit = True
                self._limit_reached += 1
                conn_log.warning(
                    "connection limit reached (%d open); new clients wait in "
                    "the listen backlog",
                    len(self._connections),
                )

    def _untrack(self, conn: Connection) -> None:
        counts = self._connections.pop(conn)
        self._bytes_in += conn.bytes_in
        self._bytes_out += conn.bytes_out
        if counts is not None:
            self._lines += counts.lines
            self._lines_too_long += counts.lines_too_long
        opened = self._opened.pop(conn, None)
        if opened is not None:
            conn_log.info(
                "%s: closed after %.3fs, %d bytes in, %d bytes out",
                format_address(conn.address),
                time.monotonic() - opened,
                conn.bytes_in,
                conn.bytes_out,
            )
        open_now = len(self._connections)
        if open_now < self._cap:
            self._acceptor.resume(_LIMIT)
            if self._at_limit and open_now <= self._cap * (1 - _LIMIT_HYSTERESIS):
                self._at_limit = False
                conn_log.info("below the connection limit (%d open)", open_now)

    def _start_limits(self) -> None:
        limits = self._limits
        self._cap = limits.connection_cap()
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None
        interval = limits.sweep_interval()
        if interval is not None:
            self._sweeper = PeriodicCallback(self._sweep, interval * 1000)
            self._sweeper.start()

    def _sweep(self) -> None:
        """Close connections that made no progress for too long."""
        now = time.monotonic()
        idle = self._limits.idle_timeout
        stall = self._limits.write_timeout
        for conn in self._connections:
            progress = conn.bytes_in + conn.bytes_out
            if progress != conn._sweep_mark:
                conn._sweep_mark = progress
                conn._quiet_since = now
                continue
            quiet = now - conn._quiet_since
            if stall and quiet >= stall and conn.writing():
                self._write_timeouts += 1
                conn_log.info(
                    "%s: took none of our pending data for %gs; closing",
                    format_address(conn.address),
                    stall,
                )
                conn.close()
            elif idle and quiet >= idle:
                self._idle_timeouts += 1
                conn_log.info(
                    "%s: idle for %gs; closing", format_address(conn.address), idle
                )
                conn.close()

    def close_all(self) -> int:
        """Close every open connection now; returns how many there were.

        They count as force-closed, as at the `shutdown` deadline.

        .. versionadded:: 0.3.0
        """
        leftover = list(self._connections)
        for conn in leftover:
            conn.close()
        self._force_closed += len(leftover)
        return len(leftover)

    async def shutdown(self, timeout: float = 10.0) -> ShutdownResult:
        """Stop accepting, let open connections finish, then close the rest.

        Connections that end by themselves within ``timeout`` seconds count as
        drained; any still open at the deadline are closed. Returns a
        `ShutdownResult`. Safe to call more than once.

        .. versionadded:: 0.1.0
        """
        self.stop()
        before = len(self._connections)
        closed_before = self._force_closed
        await self._connections.wait_empty(timeout)
        if self.close_all():
            await self._connections.wait_empty(_FORCED_CLOSE_GRACE)
        closed = self._force_closed - closed_before
        drained = max(before - closed, 0)
        self._drained += drained
        if closed:
            conn_log.info(
                "shutdown: %d connection(s) drained, %d closed at the deadline",
                drained,
                closed,
            )
        if self._sweeper is not None:
            self._sweeper.stop()
        return ShutdownResult(drained=drained, closed=closed)
