"""A chat room on `tornado_echo.LineServer`: each line goes to everyone else.

Run it::

    python examples/chat_server.py              # listens on 127.0.0.1:10000
    python examples/chat_server.py --port 0     # any free port; the log shows it

and open a few ``nc 127.0.0.1 10000`` terminals. Each greets you with your
name (your address); every line you type reaches the others as
``127.0.0.1:54321: your line``, and is not echoed back to you.

A slow client must not slow down the room, so nobody writes to a client
directly: each one has a bounded outbox, drained by its own writer task, and
a sender only ever puts lines into outboxes without waiting. A client whose
outbox overflows is too far behind to catch up, and is disconnected with a
WARNING.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from typing import Any

from tornado.iostream import StreamClosedError
from tornado.log import enable_pretty_logging

from tornado_echo import Error, LineConnection, LineServer, run

log = logging.getLogger("chat_server")


@dataclasses.dataclass(slots=True)
class _Member:
    outbox: asyncio.Queue[bytes]
    writer: asyncio.Task[None]


class ChatServer(LineServer):
    """Broadcasts every line to all the other clients, prefixed with its sender."""

    #: Lines one client may fall behind before it is disconnected: enough to
    #: ride out a burst, few enough that a stalled client costs little memory.
    max_queued_lines = 100

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._members: dict[LineConnection, _Member] = {}

    async def on_connect(self, conn: LineConnection) -> None:
        outbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=self.max_queued_lines)
        name = conn.peer
        outbox.put_nowait(f"* welcome, you are {name}".encode())
        writer = asyncio.create_task(
            self._send_outbox(conn, outbox), name=f"chat writer {name}"
        )
        self._members[conn] = _Member(outbox, writer)
        log.info("%s joined (%d here)", name, len(self._members))

    async def handle_line(self, conn: LineConnection, line: bytes) -> None:
        message = conn.peer.encode() + b": " + line
        for other, member in self._members.items():
            if other is conn or other.closed:
                continue
            try:
                member.outbox.put_nowait(message)
            except asyncio.QueueFull:
                log.warning(
                    "%s: more than %d lines behind, disconnecting",
                    other.peer,
                    self.max_queued_lines,
                )
                # Its own serve loop ends now, and on_disconnect cleans up.
                other.close()
        # Lines a client has already sent are handled without returning to
        # the event loop, so without this pause a burst from one sender could
        # fill every outbox before any writer got to run.
        await asyncio.sleep(0)

    async def on_disconnect(self, conn: LineConnection) -> None:
        member = self._members.pop(conn, None)
        if member is None:
            return
        member.writer.cancel()
        # asyncio.wait, unlike awaiting the task, does not re-raise the
        # writer's cancellation in this task.
        await asyncio.wait([member.writer])
        log.info("%s left", conn.peer)

    async def _send_outbox(
        self, conn: LineConnection, outbox: asyncio.Queue[bytes]
    ) -> None:
        try:
            while True:
                await conn.send_line(await outbox.get())
        except StreamClosedError:
            pass  # The client is gone; on_disconnect cleans up.


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A line-based chat room.")
    parser.add_argument("--port", type=int, default=10000, help="0 picks a free port")
    enable_pretty_logging()
    # Chat clients stay until they are told to go, so a long drain would
    # only delay the exit; one second lets queued lines flush.
    try:
        run(parser.parse_args().port, server=ChatServer, shutdown_timeout=1.0)
    except (Error, ValueError) as exc:  # a port in use, or not 0-65535
        sys.exit(f"{parser.prog}: {exc}")
