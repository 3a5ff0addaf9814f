"""What every server does with its connections: track, limit, time out, drain.

`tornado.tcpserver.TCPServer.stop` closes only the listening sockets: open
connections keep running and nothing knows about them. `ServerLifecycle` is
the one base that both drivers (`.EchoServer` and `.LineServer` on
`.IOStream`, `.RawEchoServer` on raw fd handlers) build on. It is made of
parts, each with one concern and its own module:

* the `.Gate` (``_gate``) accepts, reads PROXY headers, and applies the
  connection cap and the per-host limit (``_admission``), with an
  `.Acceptor` (``_accept``) that backs off when descriptors run out;
* the `.ConnectionTracker` (``_tracking``) holds the live connections and
  their records, which gives ``connection_count`` and the drain;
* the `.TimeoutSweep` (``_sweep``) closes idle and stalled connections;
* the counters of closed connections are folded into `.ServerStats` here;
* `shutdown` drains, then closes the rest.

The driver contract: a driver builds the connection object for each
admitted socket in ``_on_accepted`` (a stream, or a raw connection,
satisfying `.Connection`), calls `track_connection` at once, and
`untrack_connection` once it is closed, so that it holds its slot from
accept to close. `count_lines` and `add_buffered` feed the stats.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tornado_echo._gate import Gate
from tornado_echo._logs import conn_log, format_address
from tornado_echo._memory import MemoryReleaser
from tornado_echo._sweep import TimeoutSweep
from tornado_echo._tracking import Connection, ConnectionTracker, LineCounts, Slot
from tornado_echo.limits import Limits
from tornado_echo.stats import ServerStats, ShutdownResult

if TYPE_CHECKING:
    from tornado_echo.proxy_header import ProxyHeader
    from tornado_echo.proxy_protocol import ProxyProtocol

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "LINGER_TIMEOUT",
    "Connection",
    "LineCounts",
    "ServerLifecycle",
    "ShutdownResult",
    "Slot",
]

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


def _proxy_settings(value: ProxyProtocol | bool | None) -> ProxyProtocol | None:
    from tornado_echo.proxy_protocol import ProxyProtocol

    if value is True:
        return ProxyProtocol()
    if value is None or value is False or isinstance(value, ProxyProtocol):
        return value or None
    raise TypeError(
        f"proxy_protocol must be True, False, None or a ProxyProtocol, not {value!r}"
    )


class _Totals:
    """The counters of closed connections; live ones are added in `stats`."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "drained",
        "force_closed",
        "handshake_failures",
        "lines",
        "lines_too_long",
        "total",
    )

    def __init__(self) -> None:
        self.bytes_in = self.bytes_out = self.lines = self.lines_too_long = 0
        self.total = self.drained = self.force_closed = self.handshake_failures = 0


class ServerLifecycle:
    """Base of every server: tracking, limits, timeouts, stats and shutdown.

    A driver calls ``ServerLifecycle.__init__``, starts and stops accepting
    in its ``add_sockets`` and ``stop`` (`_start_accepting`,
    `_stop_accepting`), and follows the driver contract (see the module).
    """

    def __init__(
        self,
        *,
        limits: Limits | None,
        proxy_protocol: ProxyProtocol | bool | None,
        log_connections: bool,
        accepts_per_event: int = 128,
    ) -> None:
        if limits is not None and not isinstance(limits, Limits):
            raise TypeError(f"limits must be a Limits, not {type(limits).__name__}")
        if not isinstance(log_connections, bool):
            raise TypeError(
                f"log_connections must be True or False, not {log_connections!r}"
            )
        self._limits = limits or Limits()
        self._log_connections = log_connections
        self._tracker = ConnectionTracker()
        self._gate = Gate(
            self._on_accepted,
            self._tracker,
            per_event=accepts_per_event,
            proxy_protocol=_proxy_settings(proxy_protocol),
        )
        self._sweep = TimeoutSweep(self._tracker)
        self._memory = MemoryReleaser()
        self._totals = _Totals()
        self._buffered = 0

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

    @property
    def limits(self) -> Limits:
        """The `.Limits` in force (the constructor's ``limits``)."""
        return self._limits

    @property
    def proxy_protocol(self) -> ProxyProtocol | None:
        """The `.ProxyProtocol` settings, or None if no header is expected.

        .. versionadded:: 0.3.0
        """
        return self._gate.proxy_protocol

    @property
    def log_connections(self) -> bool:
        """True if each connection's open and close is logged at INFO."""
        return self._log_connections

    def _start_accepting(self, sockets: Iterable[socket.socket]) -> None:
        self._sweep.start(self._limits)
        self._memory.start()
        self._gate.start(sockets, self._limits)

    def _stop_accepting(self) -> None:
        self._gate.stop()

    @property
    def connection_count(self) -> int:
        """The number of connections currently open.

        Every accepted socket counts until it is closed, one still waiting
        for its PROXY header too: this is what ``max_connections`` caps.
        """
        return self._gate.slots()

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
        live = list(self._tracker)
        counts = list(self._tracker.line_counts())
        totals, gate, sweep = self._totals, self._gate, self._sweep
        return ServerStats(
            connections_open=len(live),
            connections_total=totals.total,
            connections_drained=totals.drained,
            connections_force_closed=totals.force_closed,
            bytes_in=totals.bytes_in + sum(c.bytes_in for c in live),
            bytes_out=totals.bytes_out + sum(c.bytes_out for c in live),
            lines=totals.lines + sum(c.lines for c in counts),
            lines_too_long=totals.lines_too_long
            + sum(c.lines_too_long for c in counts),
            limit_reached=gate.limit_reached,
            host_limit_refused=gate.host_limit_refused,
            accept_errors=gate.accept_errors,
            idle_timeouts=sweep.idle_timeouts,
            write_timeouts=sweep.write_timeouts,
            handshake_failures=totals.handshake_failures,
            proxy_rejected=gate.proxy_rejected,
        )

    # -- the driver contract ------------------------------------------------
    # EchoServer, LineServer and RawEchoServer call these, and nothing else
    # of the lifecycle's, for each connection they serve.

    def track_connection(self, conn: Connection, slot: Slot | None = None) -> None:
        """Count ``conn`` as open: for drivers, not applications.

        Called once, as soon as the driver has built the connection for an
        admitted socket (with its ``slot``), before anything else runs.
        """
        host = None
        if slot is not None:
            slot.taken = True
            host = slot.host
        opened = None
        if self._log_connections:
            opened = time.monotonic()
            conn_log.info("%s: connected", format_address(conn.address))
        self._tracker.add(conn, host, opened)
        self._totals.total += 1
        self._gate.update()

    def is_tracked(self, conn: object) -> bool:
        """True if ``conn`` is tracked as open: for drivers."""
        return conn in self._tracker

    def count_lines(self, conn: Connection, counts: LineCounts) -> None:
        """Add ``counts`` (lines, lines too long) to ``conn``'s stats: for drivers."""
        self._tracker.count_lines_of(conn, counts)

    def add_buffered(self, nbytes: int) -> None:
        """Count ``nbytes`` more (or, negative, fewer) in `buffered_bytes`: for drivers."""
        self._buffered += nbytes

    def count_handshake_failure(self) -> None:
        """A TLS handshake failed or timed out: for drivers."""
        self._totals.handshake_failures += 1

    def untrack_connection(self, conn: Connection) -> None:
        """Count ``conn`` as closed, once it has closed: for drivers, not applications."""
        record = self._tracker.pop(conn)
        if record is None:
            return
        self._gate.release(record.host)
        totals = self._totals
        totals.bytes_in += conn.bytes_in
        totals.bytes_out += conn.bytes_out
        counts = record.counts
        if counts is not None:
            totals.lines += counts.lines
            totals.lines_too_long += counts.lines_too_long
        if record.opened is not None:
            conn_log.info(
                "%s: closed after %.3fs, %d bytes in, %d bytes out",
                format_address(conn.address),
                time.monotonic() - record.opened,
                conn.bytes_in,
                conn.bytes_out,
            )
        self._gate.update()

    # -- shutdown -----------------------------------------------------------

    def close_all(self) -> int:
        """Close every open connection now; returns how many there were.

        They count as force-closed, as at the `shutdown` deadline.

        .. versionadded:: 0.3.0
        """
        leftover = list(self._tracker)
        for conn in leftover:
            conn.close()
        self._totals.force_closed += len(leftover)
        return len(leftover)

    async def shutdown(self, timeout: float = 10.0) -> ShutdownResult:
        """Stop accepting, let open connections finish, then close the rest.

        Connections that end by themselves within ``timeout`` seconds count as
        drained; any still open at the deadline are closed. Returns a
        `.ShutdownResult`. Safe to call more than once.

        .. versionadded:: 0.1.0
        """
        self._stop_accepting()
        before = len(self._tracker)
        closed_before = self._totals.force_closed
        await self._tracker.wait_empty(timeout)
        at_deadline = self.close_all()
        if at_deadline:
            await self._tracker.wait_empty(_FORCED_CLOSE_GRACE)
        closed = self._totals.force_closed - closed_before
        drained = max(before - closed, 0)
        self._totals.drained += drained
        if closed:
            # A close_all() meanwhile (a second SIGINT) closed the others.
            on_request = closed - at_deadline
            conn_log.info(
                "shutdown: %d connection(s) drained, %s",
                drained,
                ", ".join(
                    f"{count} {how}"
                    for count, how in (
                        (on_request, "closed on request"),
                        (at_deadline, "closed at the deadline"),
                    )
                    if count
                ),
            )
        self._sweep.stop()
        self._memory.stop()
        return ShutdownResult(drained=drained, closed=closed)
