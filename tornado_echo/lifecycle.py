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

A driver builds the connection object for each admitted socket in
``_on_accepted`` (a stream, or a raw connection, satisfying `Connection`)
and calls ``_untrack`` once it is closed; the lifecycle tracks it from the
moment it is built, so it holds its slot from accept to close.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import socket
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from tornado.ioloop import PeriodicCallback

from tornado_echo._admission import REFUSED, ConnectionCap, HostLimit
from tornado_echo._memory import MemoryReleaser
from tornado_echo.accept import Acceptor
from tornado_echo.limits import Limits
from tornado_echo.logs import conn_log, format_address, log_connection_error
from tornado_echo.stats import ServerStats

if TYPE_CHECKING:
    from tornado_echo.proxy_header import ProxyHeader
    from tornado_echo.proxy_protocol import HeaderReader, ProxyProtocol

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


class Connection(Protocol):
    """What a server tracks per connection (a stream, or a raw connection).

    ``bytes_in`` and ``bytes_out`` count what went through the socket; the
    timeout sweep watches them for progress.
    """

    #: The peer: the client's real address when a PROXY header gave it.
    address: Any
    bytes_in: int
    bytes_out: int

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


class ConnectionRecord:
    """What a `ConnectionTracker` keeps for one connection besides itself."""

    __slots__ = ("counts", "host", "progress", "quiet_sweeps")

    def __init__(self, host: str | None) -> None:
        self.counts: LineCounts | None = None
        #: The key it counts against in the per-host limit, or None.
        self.host = host
        #: ``bytes_in + bytes_out`` at the last sweep, and how many sweeps
        #: in a row have seen it unchanged. The first sweep takes the
        #: connection's start for progress: it is quiet only after that.
        self.progress = -1
        self.quiet_sweeps = 0


class Slot:
    """An admitted socket's claim on its host's share, until it is tracked."""

    __slots__ = ("host", "taken")

    def __init__(self, host: str | None) -> None:
        self.host = host
        self.taken = False


class ConnectionTracker:
    """The live connections of one server, each with its bookkeeping.

    `wait_empty` lets shutdown wait for the set to drain.
    """

    def __init__(self) -> None:
        self._live: dict[Connection, ConnectionRecord] = {}
        self._changed: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[Connection]:
        # A copy, because closing a connection while iterating discards it.
        return iter(list(self._live))

    def __contains__(self, conn: object) -> bool:
        return conn in self._live

    def add(self, conn: Connection, host: str | None = None) -> None:
        self._live[conn] = ConnectionRecord(host)

    def count_lines_of(self, conn: Connection, counts: LineCounts) -> None:
        """Report ``counts.lines`` as ``conn``'s, while it is tracked."""
        record = self._live.get(conn)
        if record is not None:
            record.counts = counts

    def pop(self, conn: Connection) -> ConnectionRecord | None:
        """Forget ``conn``; returns its record, if it was tracked."""
        record = self._live.pop(conn, None)
        if not self._live and self._changed is not None:
            self._changed.set()
        return record

    def records(self) -> list[tuple[Connection, ConnectionRecord]]:
        return list(self._live.items())

    def line_counts(self) -> Iterator[LineCounts]:
        return (r.counts for r in self._live.values() if r.counts is not None)

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

    Subclasses call ``_init_lifecycle``, build a connection for each
    admitted socket in ``_on_accepted``, and call ``_untrack`` once it has
    closed.
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
        if limits is not None and not isinstance(limits, Limits):
            raise TypeError(f"limits must be a Limits, not {type(limits).__name__}")
        if not isinstance(log_connections, bool):
            raise TypeError(
                f"log_connections must be True or False, not {log_connections!r}"
            )
        self._connections = ConnectionTracker()
        self._acceptor = Acceptor(self._accepted, per_event=accepts_per_event)
        self._cap = ConnectionCap(self._acceptor)
        self._hosts = HostLimit(None)
        self._memory = MemoryReleaser()
        self._limits = limits or Limits()
        self.proxy_protocol = proxy_protocol
        #: Log one INFO line per connection when it opens and when it closes.
        self.log_connections = log_connections
        self._sweeper: PeriodicCallback | None = None
        # Sweeps in a row without progress after which a connection is idle,
        # or stalled; 0 for a timeout that is off.
        self._idle_sweeps = 0
        self._stall_sweeps = 0
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
        from tornado_echo.proxy_protocol import ProxyProtocol

        if value is True:
            value = ProxyProtocol()
        elif not (value is None or value is False or isinstance(value, ProxyProtocol)):
            raise TypeError(
                "proxy_protocol must be True, False, None or a ProxyProtocol, "
                f"not {value!r}"
            )
        self._proxy_protocol = value or None

    def _accepted(self, sock: socket.socket, address: Any) -> None:
        proxy = self._proxy_protocol
        if proxy is None:
            self._admit(sock, address, None)
            return
        if not proxy.trusts(address):
            self._proxy_rejected += 1
            conn_log.info(
                "%s: refused: not a trusted PROXY protocol source",
                format_address(address),
            )
            sock.close()
            return
        from tornado_echo.proxy_protocol import HeaderReader

        # It holds a slot while it waits: its socket is an fd all the same.
        self._header_readers.add(
            HeaderReader(sock, address, proxy, self._after_header, self._bad_header)
        )
        self._cap.update(self._slots())

    def _after_header(
        self,
        reader: HeaderReader,
        sock: socket.socket,
        address: Any,
        header: ProxyHeader,
    ) -> None:
        self._header_readers.discard(reader)
        try:
            self._admit(sock, address, header)
        except Exception as exc:  # noqa: BLE001 - as the acceptor does
            sock.close()
            log_connection_error(address, exc)
        self._cap.update(self._slots())

    def _bad_header(self, reader: HeaderReader) -> None:
        self._header_readers.discard(reader)
        self._proxy_rejected += 1
        self._cap.update(self._slots())

    def _admit(
        self, sock: socket.socket, address: Any, proxy_header: ProxyHeader | None
    ) -> None:
        """Serve ``sock`` if its host has room for one more connection."""
        host = self._hosts.admit(address)
        if host is REFUSED:
            sock.close()
            return
        slot = Slot(host)
        try:
            self._on_accepted(sock, address, proxy_header, slot)
        finally:
            if not slot.taken:  # the socket was unusable, and closed
                self._hosts.release(host)

    def _on_accepted(
        self,
        sock: socket.socket,
        address: Any,
        proxy_header: ProxyHeader | None,
        slot: Slot,
    ) -> None:
        """Serve an admitted socket, after its PROXY header if one came.

        ``address`` is then the client's. The driver builds its connection
        and calls `track_connection` at once, before anything else runs,
        then `untrack_connection` once it has closed.
        """
        raise NotImplementedError()

    def _slots(self) -> int:
        """Slots taken: every accepted socket not yet closed."""
        return len(self._connections) + len(self._header_readers)

    @property
    def limits(self) -> Limits:
        """The `.Limits` in force; assign a new one before the server listens."""
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self._limits = limits
        self._hosts.limit = limits.max_connections_per_host
        if self._cap.cap:
            self._start_limits()

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """Start accepting on already-bound listening sockets."""
        if not self._cap.cap:
            self._start_limits()
        self._memory.start()
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
        """The number of connections currently open.

        Every accepted socket counts until it is closed, one still waiting
        for its PROXY header too: this is what ``max_connections`` caps.
        """
        return self._slots()

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
            limit_reached=self._cap.episodes,
            host_limit_refused=self._hosts.refused,
            accept_errors=self._acceptor.error_episodes,
            idle_timeouts=self._idle_timeouts,
            write_timeouts=self._write_timeouts,
            handshake_failures=self._handshake_failures,
            proxy_rejected=self._proxy_rejected,
        )

    # -- the driver contract ------------------------------------------------
    # EchoServer, LineServer and RawEchoServer call these four, and nothing
    # else of the lifecycle's, for each connection they serve.

    def track_connection(self, conn: Connection, slot: Slot | None = None) -> None:
        """Count ``conn`` as open: for drivers, not applications.

        Called once, as soon as the driver has built the connection for an
        admitted socket (with its ``slot``), before anything else runs.
        """
        host = None
        if slot is not None:
            slot.taken = True
            host = slot.host
        self._connections.add(conn, host)
        self._total += 1
        if self.log_connections:
            self._opened[conn] = time.monotonic()
            conn_log.info("%s: connected", format_address(conn.address))
        self._cap.update(self._slots())

    def count_lines(self, conn: Connection, counts: LineCounts) -> None:
        """Add ``counts`` (lines, lines too long) to ``conn``'s stats: for drivers."""
        self._connections.count_lines_of(conn, counts)

    def add_buffered(self, nbytes: int) -> None:
        """Count ``nbytes`` more (or, negative, fewer) in `buffered_bytes`: for drivers."""
        self._buffered += nbytes

    def untrack_connection(self, conn: Connection) -> None:
        """Count ``conn`` as closed, once it has closed: for drivers, not applications."""
        record = self._connections.pop(conn)
        if record is None:
            return
        self._hosts.release(record.host)
        self._bytes_in += conn.bytes_in
        self._bytes_out += conn.bytes_out
        counts = record.counts
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
        self._cap.update(self._slots())

    def _start_limits(self) -> None:
        limits = self._limits
        self._cap.cap = limits.connection_cap()
        self._hosts.limit = limits.max_connections_per_host
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None
        interval = limits.sweep_interval()
        if interval is not None:
            self._idle_sweeps = _sweeps(limits.idle_timeout, interval)
            self._stall_sweeps = _sweeps(limits.write_timeout, interval)
            self._sweeper = PeriodicCallback(self._sweep, interval * 1000)
            self._sweeper.start()

    def _sweep(self) -> None:
        """Close connections that made no progress for too long.

        Quiet time is counted in sweeps, not read off the clock: sweeps run
        on a fixed schedule, and a clock reading taken a millisecond early
        would otherwise postpone a close by a whole interval.
        """
        idle = self._idle_sweeps
        stall = self._stall_sweeps
        for conn, record in self._connections.records():
            progress = conn.bytes_in + conn.bytes_out
            if progress != record.progress:
                record.progress = progress
                record.quiet_sweeps = 0
                continue
            record.quiet_sweeps += 1
            quiet = record.quiet_sweeps
            if stall and quiet >= stall and conn.writing():
                self._write_timeouts += 1
                conn_log.info(
                    "%s: took none of our pending data for %gs; closing",
                    format_address(conn.address),
                    self._limits.write_timeout,
                )
                conn.close()
            elif idle and quiet >= idle:
                self._idle_timeouts += 1
                conn_log.info(
                    "%s: idle for %gs; closing",
                    format_address(conn.address),
                    self._limits.idle_timeout,
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
        self._memory.stop()
        return ShutdownResult(drained=drained, closed=closed)


def _sweeps(timeout: float, interval: float) -> int:
    """How many quiet sweeps make ``timeout``; 0 if it is off."""
    if not timeout:
        return 0
    # The epsilon keeps 2.0 / 0.25 from rounding up to 9 sweeps.
    return max(1, math.ceil(timeout / interval - 1e-9))
