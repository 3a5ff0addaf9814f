"""Fairness: busy connections share the event loop, and light ones barely wait.

`.IOStream` resolves a read or write inline when the socket is ready, and
awaiting a finished future does not return to the event loop, so a client
that keeps the pipe full would otherwise hold it for as long as it likes.

A connection is *busy* while it has work at hand without waiting for the
poller: its reads fill their whole chunk (so the next one completes
inline), or lines are queued in its framer. A read that comes back short
has emptied the socket, and the next one waits for the poller anyway: a
request/reply connection is never busy and pays nothing here.

The busy connections of a server share one `ROUND` of loop time: each
gives way (`next_turn`, which lets every other ready callback run) once it
has run for ``ROUND`` divided by the number of busy connections. With many
of them that is one chunk each per turn of the loop, which is what a
level-triggered poller gives the raw fd handlers of `.RawEchoServer`; a
light client then waits about one round, however many connections flood.
A lone bulk transfer gives way only once per round, so it loses almost
nothing to the yields (each costs a turn of the loop, some µs).
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["ROUND", "LoopShare", "Turn", "next_turn"]

#: Loop time that one server's busy connections get together before every
#: other callback (a light client's reply, an accept) gets a turn.
ROUND = 0.0005


class LoopShare:
    """What one server's connections know of each other's turns."""

    __slots__ = ("busy", "turns")

    def __init__(self) -> None:
        #: Turns started so far, by every connection of the server.
        self.turns = 0
        #: The latest estimate of how many connections are busy.
        self.busy = 1


class Turn:
    """One connection's part of its server's `LoopShare`.

    The driver calls `after_read` after every read, which begins a turn
    when the read filled its chunk (work at hand after a wait) and ends it
    when the read came back short (the socket is empty); and `due`
    whenever it has more without waiting (before the next read, or the
    next queued line), giving way when that returns True.

    How many connections are busy is counted, not guessed: a connection
    that stayed busy since its last turn has seen every other busy
    connection take one turn meanwhile.
    """

    __slots__ = ("_end", "_last", "_share", "_stayed_busy", "running")

    def __init__(self, share: LoopShare) -> None:
        self._share = share
        self._end = 0.0
        self._last = 0  # share.turns when this connection's turn began
        self._stayed_busy = False
        #: True while this connection is in a turn.
        self.running = False

    def after_read(self, full: bool) -> None:
        """A read returned: ``full`` if it filled its chunk, so more is waiting."""
        if full:
            if not self.running:
                self.begin()
        elif self.running:
            self.waited()

    def begin(self) -> None:
        """A turn starts: the connection has work at hand after a wait."""
        share = self._share
        share.turns += 1
        if self._stayed_busy:
            share.busy = share.turns - self._last
        self._last = share.turns
        self.running = True
        self._end = time.monotonic() + ROUND / share.busy

    def due(self) -> bool:
        """True if the connection has had its share and must give way now."""
        if not self.running:
            self.begin()
            return False
        if time.monotonic() < self._end:
            return False
        self.running = False
        self._stayed_busy = True
        return True

    def waited(self) -> None:
        """The connection waited for the network: it is not busy now."""
        self.running = False
        self._stayed_busy = False


async def next_turn() -> None:
    """Let every other ready callback run before this task goes on."""
    await asyncio.sleep(0)
