"""The live connections of one server, each with the bookkeeping it needs.

`ConnectionTracker` is the one owner of per-connection records: the
per-host key a connection counts against, its line counters, and what the
timeout sweep remembers of its progress (`ConnectionRecord`). Nothing else
stores state on a connection object.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ["Connection", "ConnectionRecord", "ConnectionTracker", "LineCounts", "Slot"]


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


class ConnectionRecord:
    """What a `ConnectionTracker` keeps for one connection besides itself."""

    __slots__ = ("counts", "host", "opened", "progress", "quiet_sweeps")

    def __init__(self, host: str | None, opened: float | None) -> None:
        self.counts: LineCounts | None = None
        #: The key it counts against in the per-host limit, or None.
        self.host = host
        #: When it opened (`time.monotonic`), if its close is to be logged.
        self.opened = opened
        #: ``bytes_in + bytes_out`` at the last sweep, and how many sweeps
        #: in a row have seen it unchanged. The first sweep takes the
        #: connection's start for progress: it is quiet only after that.
        self.progress = -1
        self.quiet_sweeps = 0

    def quiet(self, conn: Connection) -> int:
        """Sweeps in a row, this one included, in which ``conn`` moved nothing."""
        progress = conn.bytes_in + conn.bytes_out
        if progress != self.progress:
            self.progress = progress
            self.quiet_sweeps = 0
        else:
            self.quiet_sweeps += 1
        return self.quiet_sweeps


class Slot:
    """An admitted socket's claim on its host's share, until it is tracked."""

    __slots__ = ("host", "taken")

    def __init__(self, host: str | None) -> None:
        self.host = host
        self.taken = False


class ConnectionTracker:
    """The live connections of one server, each with its `ConnectionRecord`.

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

    def add(self, conn: Connection, host: str | None, opened: float | None) -> None:
        self._live[conn] = ConnectionRecord(host, opened)

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
