r"""A memcached-compatible key-value store: memcached's text protocol on `LineServer`.

Run it::

    python examples/kv_server.py                    # 127.0.0.1:11211
    python examples/kv_server.py --port 0 --max-memory 16

and use any memcached client, for example pymemcache::

    from pymemcache.client.base import Client

    client = Client(("127.0.0.1", 11211))
    client.set("greeting", b"hello", expire=60)
    client.get("greeting")                  # b"hello"

or type at it with ``nc 127.0.0.1 11211``.

It speaks the classic text protocol of memcached's ``doc/protocol.txt``:

- storage: ``set``, ``add``, ``replace``, ``append``, ``prepend`` and ``cas``,
  each ``<command> <key> <flags> <exptime> <bytes> [<cas unique>] [noreply]``
  followed by a data block of ``<bytes>`` bytes and ``\r\n``;
- retrieval: ``get``/``gets`` and ``gat``/``gats`` (get and touch) with any
  number of keys;
- ``delete``, ``incr``/``decr``, ``touch``, ``flush_all [delay]``, ``stats``
  (and ``stats cachedump``, which libmemcached's ``memcdump`` uses),
  ``version``, ``verbosity`` and ``quit``.

Replies follow memcached 1.6 to the byte, and a test checks that against the
real server, including its quirks: a ``noreply`` command sends nothing, not
even its error; a decrement that shortens a number keeps the value's length,
padded with spaces; a ``set`` of an item that is too large also deletes the
key's old value. ``version`` answers with memcached's protocol level first
(``1.6.0-tornado_echo``), which libmemcached's tools parse. The differences:

- ``stats`` describes this server; its other sub-statistics (``stats items``,
  ``slabs``, ...) are ``ERROR``, and ``stats cachedump`` puts every item in
  class 1, most recently used first (memcached lists one class's cold LRU);
- the meta commands (``mg``, ``ms``, ...) and binary protocol are not
  supported (``ERROR``);
- a delayed ``flush_all`` judges items by when they were stored, where
  memcached uses when they were last fetched;
- a get's line is at most 1 MiB (about 4,000 keys of the longest kind),
  and longer closes the connection: memcached grows its buffer for any
  length, which would let one line take any amount of memory;
- ``--max-memory`` counts what an item costs here (`ITEM_OVERHEAD` besides
  its key and value), not memcached's slab sizes, so as many items do not
  fit in the same amount.

What it shows about `LineServer`:

- raw mode: each data block is read with `LineConnection.read_exactly`,
  after the command line, even when it holds ``\r\n`` itself;
- per-connection state: `KVConnection`, the server's ``connection_class``,
  counts each client's commands (``stats`` reports them);
- bounded memory: an item is at most ``max_item_size`` (1 MiB, counted as
  memcached counts it, its header and key included), the store at most
  ``max_memory`` (64 MiB) with least-recently-used eviction, each item
  charged what it really costs, so that the process grows by about 1.25
  times ``max_memory`` at most, whatever the size of the items. A command
  line is at most 16 KiB, or 1 MiB for a multi-key get, and one that is not
  a get must end within 2 KiB, checked as it arrives
  (`LineServer.check_partial_line`); the connection is closed beyond, as
  memcached closes it. A block that is too large is read and discarded in
  small pieces, never held, and a get's reply is sent as it is built, each
  value from the store, so a get of many keys holds one value at a time.

Expiry reads the ``clock`` the server was given (`time.time` by default),
so tests can move time by hand.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tornado.log import enable_pretty_logging

from tornado_echo import Error, IncompleteReadError, LineConnection, LineServer, run

#: What ``version`` answers: memcached's protocol level first, since clients
#: parse it (libmemcached refuses one that does not start with a number).
VERSION = "1.6.0-tornado_echo"

log = logging.getLogger("kv_server")

#: memcached's limits and defaults.
MAX_KEY_LENGTH = 250
DEFAULT_MAX_ITEM_SIZE = 1024 * 1024
DEFAULT_MAX_MEMORY = 64 * 1024 * 1024
#: Bytes charged per item besides its key and value: what an item really
#: costs here, measured with tracemalloc on CPython 3.11 (the `Item`, its
#: cas and times, and its entry in the LRU dict: 234 to 276 bytes, by how
#: full the dict's table is, plus a float for an expiry), so that many tiny
#: items cannot take more memory than max_memory says.
ITEM_OVERHEAD = 300
#: What memcached counts in an item besides its value's length, against
#: ``-I`` (the item size limit): its header (48 bytes on 64-bit), the cas
#: (8), the key and its NUL, the value's "\r\n", and 4 bytes for flags that
#: are not 0.
MEMCACHED_ITEM_HEADER = 48 + 8 + 1 + 2
MEMCACHED_FLAGS_SIZE = 4
#: An exptime above 30 days is an absolute Unix time, not a delay.
MAX_RELATIVE_EXPTIME = 30 * 24 * 60 * 60
#: memcached's read buffer: a command line longer than this that is not a
#: get or gets cannot be a real command, and memcached hangs up on it.
MAX_COMMAND_LENGTH = 16 * 1024
#: memcached hangs up on a line with no newline in its first this many
#: bytes unless it is a get or gets: only those can be longer.
MAX_UNTERMINATED_COMMAND = 2048
#: What a multi-get queues before it sends: values are sent as the reply is
#: built, so a get of many keys holds at most one value and this much.
REPLY_CHUNK = 64 * 1024
#: ``stats cachedump`` lists at most this much, as memcached does.
MAX_CACHEDUMP = 2 * 1024 * 1024
#: Slab class ids ``stats cachedump`` accepts (memcached's
#: MAX_NUMBER_OF_SLAB_CLASSES); all items are in class 1 here.
SLAB_CLASSES = 64
#: How much of a refused data block is read at a time while discarding it.
DISCARD_CHUNK = 64 * 1024

MAX_U32 = 2**32 - 1
MAX_U64 = 2**64 - 1
MAX_I32 = 2**31 - 1
MAX_I64 = 2**63 - 1

# --- numbers, parsed as memcached's safe_strto* functions parse them --------

# strtol and friends: optional leading whitespace and sign, decimal digits,
# then the end of the token or whitespace (or a NUL, which ends a C string).
_NUMBER = re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-9]+)(?:[ \t\n\v\f\r\x00]|\Z)")


def _c_integer(token: bytes) -> tuple[int, bool] | None:
    """(magnitude, negative) of a C-style integer token, or None."""
    match = _NUMBER.match(token)
    if match is None:
        return None
    return int(match[2]), match[1] == b"-"


def parse_u64(token: bytes) -> int | None:
    """An unsigned 64-bit number as ``safe_strtoull`` reads it, or None.

    >>> parse_u64(b"18446744073709551615"), parse_u64(b"-1"), parse_u64(b"1x")
    (18446744073709551615, None, None)
    """
    parsed = _c_integer(token)
    if parsed is None or parsed[0] > MAX_U64:
        return None
    value, negative = parsed
    if negative:
        # strtoull negates modulo 2**64; memcached then refuses the result
        # only if it looks negative as a signed number ("-0" passes).
        value = -value & MAX_U64
        if value > MAX_I64:
            return None
    return value


def parse_u32(token: bytes) -> int | None:
    """A 32-bit unsigned number (flags): ``safe_strtoul`` into a uint32."""
    value = parse_u64(token)
    return None if value is None else value & MAX_U32


def parse_i32(token: bytes) -> int | None:
    """A signed number (exptime, length): ``safe_strtol`` into an int32.

    memcached parses a 64-bit long and stores it in 32 bits, so large values
    wrap; so do they here.
    """
    parsed = _c_integer(token)
    if parsed is None:
        return None
    value = -parsed[0] if parsed[1] else parsed[0]
    if not -MAX_I64 - 1 <= value <= MAX_I64:
        return None
    return (value + 2**31) % 2**32 - 2**31


# --- the store: no I/O, no protocol ------------------------------------------


@dataclass(slots=True)
class Item:
    """One stored value and its metadata."""

    value: bytes
    flags: int
    #: Clock time it expires at; 0 for never.
    expires: float
    cas: int
    #: Clock time it was stored, for a delayed ``flush_all``.
    stored: float


class Store:
    """Items by key, in least-recently-used order, within ``max_memory``.

    ``clock`` gives the current time in seconds; every expiry is measured
    against it.
    """

    def __init__(self, max_memory: int, clock: Callable[[], float]) -> None:
        self.max_memory = max_memory
        self.clock = clock
        self.started = clock()
        self.memory = 0
        self.evictions = 0
        self._items: OrderedDict[bytes, Item] = OrderedDict()
        self._last_cas = 0
        # A delayed flush_all: items stored at or before this time are gone
        # once the clock reaches it.
        self._flush_until: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def live_items(self) -> Iterator[tuple[bytes, Item]]:
        """The live items, most recently used first; change nothing meanwhile."""
        for key, item in reversed(self._items.items()):
            if self._alive(item, self.clock()):
                yield key, item

    def next_cas(self) -> int:
        """A new cas unique; memcached numbers them from 1, server-wide."""
        self._last_cas += 1
        return self._last_cas

    def expiry(self, exptime: int) -> float:
        """The clock time an exptime means (0: never), as memcached reads it.

        A negative exptime has already expired; one above 30 days is an
        absolute Unix time.
        """
        if exptime == 0:
            return 0
        if exptime < 0:
            return -1
        if exptime > MAX_RELATIVE_EXPTIME:
            return exptime
        return self.clock() + exptime

    def get(self, key: bytes) -> Item | None:
        """The live item stored under ``key``, now the most recently used."""
        item = self.peek(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def peek(self, key: bytes) -> Item | None:
        """The live item under ``key``, leaving the LRU order alone."""
        item = self._items.get(key)
        if item is None:
            return None
        if not self._alive(item, self.clock()):
            self.delete(key)
            return None
        return item

    def _alive(self, item: Item, now: float) -> bool:
        flush = self._flush_until
        return not (
            (item.expires and item.expires <= now)
            or (flush is not None and flush <= now and item.stored <= flush)
        )

    def put(self, key: bytes, value: bytes, flags: int, expires: float) -> Item:
        """Store a value under a new cas unique, evicting what it takes."""
        self.delete(key)
        item = Item(value, flags, expires, self.next_cas(), self.clock())
        self.memory += self._cost(key, value)
        self._items[key] = item
        while self.memory > self.max_memory:
            old_key = next(iter(self._items))
            self.delete(old_key)
            self.evictions += 1
        return item

    def rewrite(self, key: bytes, item: Item, value: bytes) -> None:
        """Give an item a new value of the same length in place (``decr``)."""
        assert len(value) == len(item.value)
        item.value = value
        item.cas = self.next_cas()
        self._items.move_to_end(key)

    def delete(self, key: bytes) -> bool:
        item = self._items.pop(key, None)
        if item is None:
            return False
        self.memory -= self._cost(key, item.value)
        return True

    def flush(self, until: float) -> None:
        """Drop every item stored at or before ``until``, when it comes."""
        if until <= self.clock():
            self._items.clear()
            self.memory = 0
            self._flush_until = None
            # memcached marks an immediate flush with a cas unique of its own.
            self.next_cas()
        else:
            self._flush_until = until

    @staticmethod
    def _cost(key: bytes, value: bytes) -> int:
        return len(key) + len(value) + ITEM_OVERHEAD


# --- the protocol -------------------------------------------------------------

Reply = bytes | None

BAD_FORMAT = b"CLIENT_ERROR bad command line format"
BAD_EXPTIME = b"CLIENT_ERROR invalid exptime argument"
BAD_DELETE = b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"

#: No limit on the number of words.
ANY = sys.maxsize

#: The commands that take any number of keys: their lines are never split
#: into a list of words, which for a 1 MiB line of one-byte keys would cost
#: twenty times the line.
RETRIEVAL = frozenset({b"get", b"gets", b"gat", b"gats"})

_WORD = re.compile(rb"[^ ]+")


def item_size(key: bytes, length: int, flags: int) -> int:
    """The size memcached gives an item, which ``max_item_size`` bounds.

    >>> item_size(b"a", 1048516, 0)  # the largest value memcached takes for "a"
    1048576
    """
    extra = MEMCACHED_FLAGS_SIZE if flags else 0
    return MEMCACHED_ITEM_HEADER + len(key) + length + extra


class KVConnection(LineConnection):
    """A client of `KVServer`, with the state it keeps per connection."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        #: Commands this client sent.
        self.commands = 0


Handler = Callable[[KVConnection, list[bytes]], Awaitable[Reply]]
#: A handler, and the fewest and most words (the command's name included)
#: its command line may have: outside them memcached answers ERROR before
#: looking at a single argument.
Command = tuple[Handler, int, int]


def check_limits(max_item_size: int, max_memory: int) -> None:
    """Raise `ValueError` unless the limits make a usable store."""
    if max_item_size < 1:
        raise ValueError(f"max_item_size must be at least 1, not {max_item_size}")
    if max_memory < max_item_size + MAX_KEY_LENGTH + ITEM_OVERHEAD:
        raise ValueError("max_memory must hold at least one item of max_item_size")


class KVServer(LineServer):
    """A memcached-compatible store shared by all its clients.

    ``max_item_size`` bounds one item as memcached counts it (`item_size`:
    its value, key and memcached's header), and ``max_memory`` the whole
    store, in bytes, as this server counts it (`ITEM_OVERHEAD` per item);
    ``clock`` is the time source for expiry.
    """

    # memcached ends lines with "\r\n" but, like it, accept a bare "\n" too.
    delimiter = b"\n"
    # Long enough for a get of 4,000 keys of the longest kind.
    max_line_length = 1024 * 1024
    on_long_line = "close"
    connection_class = KVConnection
    # A line that is not a get must show its end within memcached's 2 KiB.
    partial_line_check = MAX_UNTERMINATED_COMMAND

    def __init__(
        self,
        *,
        max_item_size: int = DEFAULT_MAX_ITEM_SIZE,
        max_memory: int = DEFAULT_MAX_MEMORY,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_limits(max_item_size, max_memory)
        self.max_item_size = max_item_size
        self.store = Store(max_memory, clock)
        self.verbosity = 0
        # Storage commands: key, flags, exptime, bytes (and for cas the cas
        # unique), then perhaps noreply.
        self.commands: dict[bytes, Command] = {
            **dict.fromkeys(
                [b"set", b"add", b"replace", b"append", b"prepend"], (self._store, 5, 6)
            ),
            b"cas": (self._store, 6, 7),
            b"delete": (self._delete, 2, 4),
            b"incr": (self._incr, 3, 4),
            b"decr": (self._incr, 3, 4),
            b"touch": (self._touch, 3, 4),
            b"flush_all": (self._flush_all, 1, 3),
            b"verbosity": (self._verbosity, 2, 3),
            # Of the sub-statistics, only "stats cachedump" (for memcdump).
            b"stats": (self._stats, 1, ANY),
            b"version": (self._version, 1, ANY),
            b"quit": (self._quit, 1, ANY),
        }

    async def handle_line(self, conn: LineConnection, line: bytes) -> None:
        assert isinstance(conn, KVConnection)
        conn.commands += 1
        if len(line) > MAX_COMMAND_LENGTH and not is_multiget(line):
            log.info("%s: a %d-byte command line; closing", conn.peer, len(line))
            conn.close()
            return
        # memcached reads a command as a C string, so a NUL ends it, and
        # splits it at spaces only.
        line = line.split(b"\0", 1)[0]
        if len(line) > 1 and line.endswith(b"\r"):
            line = line[:-1]
        first = _WORD.search(line)
        if first is not None and first.group() in RETRIEVAL:
            reply = await self._get(conn, first.group(), line, first.end())
            if reply is not None and not conn.closed:
                await conn.write(reply + b"\r\n")
            return
        words = [word for word in line.split(b" ") if word]
        command = self.commands.get(words[0]) if words else None
        if command is not None:
            handler, fewest, most = command
            ok = fewest <= len(words) <= most
            reply = await handler(conn, words) if ok else b"ERROR"
        elif is_http(words):
            conn.close()
            return
        else:
            reply = b"ERROR"
        if reply is not None and not conn.closed:
            await conn.write(reply + b"\r\n")

    # Each handler gets the command's words, as many as its entry in
    # `commands` allows, and returns its reply without the final "\r\n", or
    # None for no reply.

    async def _store(self, conn: KVConnection, words: list[bytes]) -> Reply:
        command = words[0]
        noreply = words[-1] == b"noreply"
        key = words[1]
        if len(key) > MAX_KEY_LENGTH:
            # memcached does not read the block here: it arrives as commands.
            return quiet(noreply, BAD_FORMAT)
        flags, exptime, length = (
            parse_u32(words[2]),
            parse_i32(words[3]),
            parse_i32(words[4]),
        )
        cas = parse_u64(words[5]) if command == b"cas" else 0
        if flags is None or exptime is None or length is None or cas is None:
            return quiet(noreply, BAD_FORMAT)
        if length < 0 or length > MAX_I32 - 2:
            return quiet(noreply, BAD_FORMAT)
        if item_size(key, length, flags) > self.max_item_size:
            if command == b"set":
                # A failed set must not leave the old value to be read.
                self.store.delete(key)
            # Like memcached, answer once the whole block has been read.
            await self._discard(conn, length + 2)
            if conn.closed:
                return None
            return quiet(noreply, b"SERVER_ERROR object too large for cache")
        expires = self.store.expiry(exptime)
        try:
            block = await conn.read_exactly(length + 2)
        except IncompleteReadError as exc:
            self._hung_up(conn, exc)
            return None
        if not block.endswith(b"\r\n"):
            return quiet(noreply, b"CLIENT_ERROR bad data chunk")
        return quiet(
            noreply, self._apply(command, key, block[:-2], flags, expires, cas)
        )

    def _apply(
        self,
        command: bytes,
        key: bytes,
        value: bytes,
        flags: int,
        expires: float,
        cas: int,
    ) -> bytes:
        store = self.store
        old = store.peek(key)
        if command == b"set":
            pass
        elif command == b"add":
            if old is not None:
                store.get(key)  # memcached freshens it in the LRU
                return b"NOT_STORED"
        elif command == b"replace":
            if old is None:
                return b"NOT_STORED"
        elif command == b"cas":
            if old is None:
                return b"NOT_FOUND"
            if cas != old.cas:
                return b"EXISTS"
        else:  # append, prepend: the old item keeps its flags and expiry
            if old is None:
                return b"NOT_STORED"
            value = old.value + value if command == b"append" else value + old.value
            if item_size(key, len(value), old.flags) > self.max_item_size:
                return b"NOT_STORED"
            flags, expires = old.flags, old.expires
        store.put(key, value, flags, expires)
        return b"STORED"

    async def _get(
        self, conn: KVConnection, command: bytes, line: bytes, pos: int
    ) -> Reply:
        """get, gets, gat, gats: the keys start at ``line[pos:]``.

        The reply goes out as it is built, each value from the store, so
        that a get of many keys (or of one big key many times) holds one
        value and `REPLY_CHUNK` at most; every write is awaited.
        """
        touch = command.startswith(b"gat")
        with_cas = command.endswith(b"s")
        expires = 0.0
        if touch:
            word = _WORD.search(line, pos)
            if word is None:
                return b"ERROR"
            exptime = parse_i32(word.group())
            if exptime is None:
                return BAD_EXPTIME
            expires = self.store.expiry(exptime)
            pos = word.end()
        elif _WORD.search(line, pos) is None:
            return b"ERROR"
        store = self.store
        too_long = next(
            (
                w
                for w in _WORD.finditer(line, pos)
                if w.end() - w.start() > MAX_KEY_LENGTH
            ),
            None,
        )
        if too_long is not None:
            # memcached drops the values it found so far, and sends none,
            # but it has looked them up: they were used, or touched.
            for word in _WORD.finditer(line, pos, too_long.start()):
                item = store.get(word.group())
                if item is not None and touch:
                    item.expires = expires
            return BAD_FORMAT
        reply = _Reply(conn)
        for word in _WORD.finditer(line, pos):
            key = word.group()
            item = store.get(key)
            if item is None:
                continue
            if touch:
                item.expires = expires
            value = item.value
            cas = b" %d" % item.cas if with_cas else b""
            await reply.add(
                b"VALUE %s %d %d%s\r\n" % (key, item.flags, len(value), cas)
            )
            await reply.add(value)
            await reply.add(b"\r\n")
        await reply.add(b"END\r\n")
        await reply.flush()
        return None

    async def _delete(self, conn: KVConnection, words: list[bytes]) -> Reply:
        noreply = False
        if len(words) > 2:
            # "delete <key> 0" is an old form memcached still accepts.
            hold_is_zero = words[2] == b"0"
            noreply = words[-1] == b"noreply"
            if not (
                (len(words) == 3 and (hold_is_zero or noreply))
                or (len(words) == 4 and hold_is_zero and noreply)
            ):
                return quiet(noreply, BAD_DELETE)
        key = words[1]
        if len(key) > MAX_KEY_LENGTH:
            return quiet(noreply, BAD_FORMAT)
        found = self.store.peek(key) is not None and self.store.delete(key)
        return quiet(noreply, b"DELETED" if found else b"NOT_FOUND")

    async def _incr(self, conn: KVConnection, words: list[bytes]) -> Reply:
        noreply = words[-1] == b"noreply"
        key = words[1]
        if len(key) > MAX_KEY_LENGTH:
            return quiet(noreply, BAD_FORMAT)
        delta = parse_u64(words[2])
        if delta is None:
            return quiet(noreply, b"CLIENT_ERROR invalid numeric delta argument")
        item = self.store.get(key)
        if item is None:
            return quiet(noreply, b"NOT_FOUND")
        number = parse_u64(item.value) if item.value else None
        if number is None:
            return quiet(
                noreply, b"CLIENT_ERROR cannot increment or decrement non-numeric value"
            )
        if words[0] == b"incr":
            number = (number + delta) & MAX_U64  # wraps, as in C
        else:
            number = max(number - delta, 0)  # stops at zero
        digits = b"%d" % number
        if len(digits) <= len(item.value):
            # memcached rewrites the value in place, padded with spaces.
            self.store.rewrite(key, item, digits.ljust(len(item.value)))
        else:
            self.store.put(key, digits, item.flags, item.expires)
        return quiet(noreply, digits)

    async def _touch(self, conn: KVConnection, words: list[bytes]) -> Reply:
        noreply = words[-1] == b"noreply"
        key = words[1]
        if len(key) > MAX_KEY_LENGTH:
            return quiet(noreply, BAD_FORMAT)
        exptime = parse_i32(words[2])
        if exptime is None:
            return quiet(noreply, BAD_EXPTIME)
        item = self.store.get(key)
        if item is None:
            return quiet(noreply, b"NOT_FOUND")
        item.expires = self.store.expiry(exptime)
        return quiet(noreply, b"TOUCHED")

    async def _flush_all(self, conn: KVConnection, words: list[bytes]) -> Reply:
        noreply = words[-1] == b"noreply"
        delay = 0
        if len(words) != (2 if noreply else 1):
            parsed = parse_i32(words[1])
            if parsed is None:
                return quiet(noreply, BAD_EXPTIME)
            delay = parsed
        store = self.store
        # As in memcached, what was stored up to a second before the deadline
        # goes; a delay of 0 or 1 (or one in the past) is a flush right now.
        until = store.expiry(delay) - 1 if delay > 0 else store.clock()
        store.flush(until)
        return quiet(noreply, b"OK")

    async def _verbosity(self, conn: KVConnection, words: list[bytes]) -> Reply:
        noreply = words[-1] == b"noreply"
        level = parse_u32(words[1])
        if level is None:
            return quiet(noreply, BAD_FORMAT)
        # Kept for clients that set it; this server logs through `logging`.
        self.verbosity = level
        return quiet(noreply, b"OK")

    async def _stats(self, conn: KVConnection, words: list[bytes]) -> Reply:
        if len(words) > 1:
            return self._cachedump(words) if words[1] == b"cachedump" else b"ERROR"
        store = self.store
        now = store.clock()
        stats: dict[str, object] = {
            "pid": os.getpid(),
            "uptime": int(now - store.started),
            "time": int(now),
            "version": VERSION,
            "curr_connections": self.connection_count,
            "connection_commands": conn.commands,
            "curr_items": len(store),
            "bytes": store.memory,
            "limit_maxbytes": store.max_memory,
            "item_size_max": self.max_item_size,
            "evictions": store.evictions,
        }
        lines = [
            b"STAT %s %s\r\n" % (k.encode(), str(v).encode()) for k, v in stats.items()
        ]
        return b"".join(lines) + b"END"

    def _cachedump(self, words: list[bytes]) -> bytes:
        """``stats cachedump <class> <limit>``: the keys, for memcdump.

        There are no slab classes here: every item is in class 1, most
        recently used first; the other classes are empty.
        """
        if len(words) < 4:
            return b"CLIENT_ERROR bad command line"
        ident, limit = parse_u32(words[2]), parse_u32(words[3])
        if ident is None or limit is None:
            return BAD_FORMAT
        if ident >= SLAB_CLASSES:
            return b"CLIENT_ERROR Illegal slab id"
        lines: list[bytes] = []
        size = 0
        for key, item in self.store.live_items() if ident == 1 else ():
            expiry = int(item.expires) if item.expires > 0 else 0
            entry = b"ITEM %s [%d b; %d s]\r\n" % (key, len(item.value), expiry)
            if size + len(entry) > MAX_CACHEDUMP:
                break
            lines.append(entry)
            size += len(entry)
            if len(lines) == limit:
                break
        return b"".join(lines) + b"END"

    async def _version(self, conn: KVConnection, words: list[bytes]) -> Reply:
        return b"VERSION " + VERSION.encode()

    async def _quit(self, conn: KVConnection, words: list[bytes]) -> Reply:
        conn.finish()
        return None

    async def _discard(self, conn: KVConnection, size: int) -> None:
        """Read and drop ``size`` bytes, a piece at a time."""
        while size and not conn.closed:
            try:
                size -= len(await conn.read_exactly(min(size, DISCARD_CHUNK)))
            except IncompleteReadError as exc:
                self._hung_up(conn, exc)

    def check_partial_line(self, conn: LineConnection, head: bytes) -> None:
        # memcached's rule, before the whole line has to be held: only a
        # get (or gets) may go on for more than 2 KiB without a newline.
        if not is_multiget(head):
            log.info(
                "%s: no end of line in a command's first %d bytes; closing",
                conn.peer,
                MAX_UNTERMINATED_COMMAND,
            )
            conn.close()

    @staticmethod
    def _hung_up(conn: KVConnection, exc: IncompleteReadError) -> None:
        # The client went away mid-block: network weather, not a bug.
        log.info(
            "%s: closed after %d of %d bytes of a data block",
            conn.peer,
            len(exc.partial),
            exc.expected,
        )
        conn.close()


class _Reply:
    """A reply sent as it is built, in pieces of about `REPLY_CHUNK`."""

    def __init__(self, conn: LineConnection) -> None:
        self._conn = conn
        self._parts: list[bytes] = []
        self._size = 0

    async def add(self, data: bytes) -> None:
        if len(data) >= REPLY_CHUNK:
            # A big value goes out as it is, not copied into a piece.
            await self.flush()
            await self._conn.write(data)
            return
        self._parts.append(data)
        self._size += len(data)
        if self._size >= REPLY_CHUNK:
            await self.flush()

    async def flush(self) -> None:
        if self._parts:
            data = b"".join(self._parts)
            self._parts.clear()
            self._size = 0
            await self._conn.write(data)


def is_multiget(line: bytes) -> bool:
    """True if ``line`` is a get or gets, which memcached lets be any length."""
    command = line.lstrip(b" ")
    # memcached also gives up on a line that starts with 100 spaces.
    return len(line) - len(command) <= 100 and command.startswith((b"get ", b"gets "))


def is_http(words: list[bytes]) -> bool:
    """True for what memcached takes for an HTTP request, which it hangs up on.

    It looks at the last word only after ruling out every command it
    knows by its first letter.
    """
    return (
        len(words) > 0
        and len(words[0]) >= 2
        and words[0][:1] not in b"mgsacidt"
        and words[-1].startswith(b"HTTP/")
    )


def quiet(noreply: bool, reply: bytes) -> Reply:
    """``reply``, unless the command said ``noreply``: then nothing, even
    an error, as memcached does."""
    return None if noreply else reply


def main() -> None:
    parser = argparse.ArgumentParser(
        description="A memcached-compatible key-value store."
    )
    parser.add_argument("--port", type=int, default=11211, help="0 picks a free port")
    parser.add_argument(
        "--max-item-size",
        type=int,
        default=DEFAULT_MAX_ITEM_SIZE,
        metavar="BYTES",
        help="the largest item, counted as memcached counts it: value, key "
        "and its header (default: 1 MiB)",
    )
    parser.add_argument(
        "--max-memory",
        type=int,
        default=DEFAULT_MAX_MEMORY // 2**20,
        metavar="MiB",
        help="memory for items before the least recently used go (default: 64)",
    )
    args = parser.parse_args()
    limits = {
        "max_item_size": args.max_item_size,
        "max_memory": args.max_memory * 2**20,
    }
    try:
        check_limits(**limits)
    except ValueError as exc:
        parser.error(str(exc))
    enable_pretty_logging()
    try:
        # A factory: servers are made inside the running event loop.
        run(args.port, server=functools.partial(KVServer, **limits))
    except (Error, ValueError) as exc:  # a port in use, or not 0-65535
        sys.exit(f"{parser.prog}: {exc}")


if __name__ == "__main__":
    main()
