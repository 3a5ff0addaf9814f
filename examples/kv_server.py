r"""A key-value store speaking a small subset of memcached's text protocol.

Run it::

    python examples/kv_server.py              # listens on 127.0.0.1:10000
    python examples/kv_server.py --port 0     # any free port; the log shows it

and try it with ``nc -C 127.0.0.1 10000`` (``-C`` sends the ``\r\n`` line
ends the protocol needs)::

    set greeting 5
    hello
    STORED
    get greeting
    VALUE greeting 5
    hello
    END
    delete greeting
    DELETED
    quit

Commands are lines ending in ``\r\n``, with fields separated by single spaces:

``set <key> <bytes>``
    followed by a data block of exactly ``<bytes>`` bytes and ``\r\n``; the
    block is read raw, so it may hold any bytes, ``\r\n`` included. Replies
    ``STORED``, or ``CLIENT_ERROR bad data chunk`` if the block does not end
    in ``\r\n``. A block larger than ``max_value_size`` is refused with
    ``CLIENT_ERROR value too large`` and the connection is closed: the
    block that follows would otherwise be read as commands, and skipping it
    would mean receiving what the limit exists to refuse.
``get <key>``
    ``VALUE <key> <bytes>\r\n<data>\r\nEND``, or just ``END`` if the key is
    not set.
``delete <key>``
    ``DELETED``, or ``NOT_FOUND``.
``quit``
    closes the connection.

A key is 1 to 250 bytes with no spaces or control characters. An unknown
command gets ``ERROR``, bad arguments get ``CLIENT_ERROR <reason>``, and the
connection carries on. A ``set`` whose key is bad but whose length is valid
still consumes its data block, so the next command is read in sync.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from tornado.log import enable_pretty_logging

from tornado_echo import IncompleteReadError, LineConnection, LineServer, run

log = logging.getLogger("kv_server")

#: memcached's limit, so that keys are portable between the two.
MAX_KEY_LENGTH = 250

BAD_KEY = "CLIENT_ERROR key must be 1 to 250 bytes with no control characters"
BAD_LENGTH = "CLIENT_ERROR length must be a non-negative integer"


def is_valid_key(key: bytes) -> bool:
    """True if ``key`` is 1 to 250 bytes, none of them space or control."""
    return 0 < len(key) <= MAX_KEY_LENGTH and all(b > 32 and b != 127 for b in key)


class KVServer(LineServer):
    """An in-memory key-value store shared by all its clients.

    ``max_value_size`` bounds a value; pass it to the constructor to
    override the class default for one server.
    """

    delimiter = b"\r\n"
    # A valid command is at most about 280 bytes; replying and skipping a
    # longer line keeps the connection usable, where "close" would not.
    max_line_length = 1024
    on_long_line = "reply"
    long_line_reply = "CLIENT_ERROR line too long"
    #: The largest value ``set`` accepts, in bytes. A block is held in memory
    #: whole, so this is also what one client can make the server buffer.
    max_value_size = 1024 * 1024

    def __init__(self, *, max_value_size: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if max_value_size is not None:
            self.max_value_size = max_value_size
        self.store: dict[bytes, bytes] = {}

    async def handle_line(self, conn: LineConnection, line: bytes) -> str | None:
        command, *args = line.split(b" ")
        if command == b"set":
            return await self._set(conn, args)
        if command == b"get":
            return await self._get(conn, args)
        if command == b"delete":
            if len(args) != 1:
                return "CLIENT_ERROR usage: delete <key>"
            if not is_valid_key(args[0]):
                return BAD_KEY
            return (
                "DELETED" if self.store.pop(args[0], None) is not None else "NOT_FOUND"
            )
        if command == b"quit" and not args:
            conn.finish()
            return None
        return "ERROR"

    async def _set(self, conn: LineConnection, args: list[bytes]) -> str | None:
        if len(args) != 2:
            return "CLIENT_ERROR usage: set <key> <bytes>"
        key, length = args
        # isdigit, unlike int(), refuses signs, spaces and underscores.
        if not length.isdigit():
            return BAD_LENGTH
        size = int(length)
        if size > self.max_value_size:
            await conn.send_line("CLIENT_ERROR value too large")
            conn.finish()
            return None
        try:
            block = await conn.read_exactly(size + 2)
        except IncompleteReadError as exc:
            # The client hung up mid-block: network weather, not a bug.
            log.info(
                "%s: closed after %d of %d bytes of a data block",
                conn.peer,
                len(exc.partial),
                exc.expected,
            )
            conn.close()
            return None
        if not is_valid_key(key):
            return BAD_KEY
        if not block.endswith(b"\r\n"):
            return "CLIENT_ERROR bad data chunk"
        self.store[key] = block[:-2]
        return "STORED"

    async def _get(self, conn: LineConnection, args: list[bytes]) -> str | None:
        if len(args) != 1:
            return "CLIENT_ERROR usage: get <key>"
        key = args[0]
        if not is_valid_key(key):
            return BAD_KEY
        value = self.store.get(key)
        if value is None:
            return "END"
        await conn.write(b"VALUE %s %d\r\n%s\r\nEND\r\n" % (key, len(value), value))
        return None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A memcached-style key-value store.")
    parser.add_argument("--port", type=int, default=10000, help="0 picks a free port")
    enable_pretty_logging()
    run(parser.parse_args().port, server=KVServer)
