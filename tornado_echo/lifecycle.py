"""Connection tracking and graceful shutdown, shared by every server.

`tornado.tcpserver.TCPServer.stop` closes only the listening sockets: open
connections keep running and nothing knows about them. `ConnectionTracker`
is the small piece each driver (`.EchoServer`, `.LineServer` and the raw
fd-handler server in `tornado_echo.compat`) uses to remember its live
connections, and `ServerLifecycle` builds ``connection_count`` and
``shutdown(timeout)`` on top of it, so the drivers share one implementation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import ssl
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from tornado.iostream import StreamClosedError
from tornado.log import app_log

#: Logger for per-connection events (connects, resets, limits).
conn_log = logging.getLogger("tornado_echo.connection")

# errnos that mean "the peer went away"; they are ordinary network weather,
# not bugs, so they are logged at DEBUG without a traceback.
_PEER_GONE = frozenset(
    {
        errno.ECONNRESET,
        errno.EPIPE,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.ENOTCONN,
        errno.ESHUTDOWN,
    }
)

# IOStream resolves a read or write inline when the socket is ready, and
# awaiting a finished future does not return to the event loop: a client
# that keeps the pipe full would otherwise monopolise it. Each connection
# gives the loop a turn after this many seconds of uninterrupted work.
_TIME_SLICE = 0.005

#: When the server ends a connection the client has not closed, how long it
#: keeps reading and dropping the client's input so the close does not turn
#: into a reset that destroys replies the client has yet to read.
LINGER_TIMEOUT = 2.0

# After shutdown force-closes connections, their handlers still need one or
# two loop iterations to run their ``finally`` blocks; wait this long for
# them so callers see a quiescent server, but never hang on a stuck handler.
_FORCED_CLOSE_GRACE = 1.0


class Closable(Protocol):
    """Anything a tracker can force-close (an `.IOStream`, a raw connection)."""

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class ShutdownResult:
    """What `ServerLifecycle.shutdown` did.

    ``drained`` connections finished on their own before the deadline;
    ``closed`` ones were still open at the deadline and were closed.
    """

    drained: int
    closed: int


def is_peer_gone(exc: BaseException) -> bool:
    """True if ``exc`` only says that the peer went away (EOF, reset, TLS abort).

    These are ordinary network conditions, not bugs, so they are logged
    without a traceback.
    """
    if isinstance(exc, StreamClosedError):
        return exc.real_error is None or is_peer_gone(exc.real_error)
    if isinstance(exc, ssl.SSLError):
        return True
    return isinstance(exc, OSError) and exc.errno in _PEER_GONE


def log_connection_error(address: Any, exc: BaseException) -> None:
    """Log why a connection ended abnormally, at the level it deserves.

    A reset or broken pipe is one DEBUG line; anything else is a bug in a
    handler and is logged once, with its traceback, on ``tornado.application``.
    """
    if is_peer_gone(exc):
        if isinstance(exc, StreamClosedError):
            exc = exc.real_error or exc
        conn_log.debug("%s: connection ended: %s", format_address(address), exc)
    else:
        app_log.error(
            "Uncaught exception serving %s", format_address(address), exc_info=exc
        )


def format_address(address: Any) -> str:
    """``host:port`` for an IP peer, the path (or ``unix``) for a unix socket."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address) or "unix"


class ConnectionTracker:
    """The set of live connections of one server.

    Drivers call `add` when a connection starts and `discard` when it has
    been closed; `wait_empty` lets shutdown wait for the set to drain.
    """

    def __init__(self) -> None:
        self._live: set[Closable] = set()
        self._changed: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[Closable]:
        # A copy, because closing a connection while iterating discards it.
        return iter(list(self._live))

    def add(self, conn: Closable) -> None:
        self._live.add(conn)

    def discard(self, conn: Closable) -> None:
        self._live.discard(conn)
        if not self._live and self._changed is not None:
            self._changed.set()

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


def time_slice_end() -> float:
    """When a connection's loop that starts now must next give way.

    The loops keep the result in a local and compare it with
    ``time.monotonic()`` on every request, then call `next_time_slice`::

        slice_end = time_slice_end()
        while ...:
            ...
            if time.monotonic() >= slice_end:
                slice_end = await next_time_slice()

    A float in the loop's frame rather than an object: nothing to allocate
    per connection, and no method call per request.
    """
    return time.monotonic() + _TIME_SLICE


async def next_time_slice() -> float:
    """Let other callbacks run; returns the end of the next slice."""
    await asyncio.sleep(0)
    return time.monotonic() + _TIME_SLICE


class ServerLifecycle:
    """Mixin that gives a server ``connection_count`` and ``shutdown()``.

    The class it is mixed into must provide ``stop()`` (stop accepting) and
    register its connections with ``self._connections``.
    """

    _connections: ConnectionTracker
    _buffered: int = 0

    if TYPE_CHECKING:

        def stop(self) -> None: ...

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

    async def shutdown(self, timeout: float = 10.0) -> ShutdownResult:
        """Stop accepting, let open connections finish, then close the rest.

        Connections that end by themselves within ``timeout`` seconds count as
        drained; any still open at the deadline are closed. Returns a
        `ShutdownResult`. Safe to call more than once.

        .. versionadded:: 0.1.0
        """
        self.stop()
        before = len(self._connections)
        await self._connections.wait_empty(timeout)
        leftover = list(self._connections)
        for conn in leftover:
            conn.close()
        if leftover:
            await self._connections.wait_empty(_FORCED_CLOSE_GRACE)
            conn_log.info(
                "shutdown: %d connection(s) drained, %d closed at the deadline",
                before - len(leftover),
                len(leftover),
            )
        return ShutdownResult(drained=before - len(leftover), closed=len(leftover))
