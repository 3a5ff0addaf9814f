"""examples/kv_server.py with a real memcached client (pymemcache), and its own limits.

pymemcache's client is synchronous: it runs in a worker thread
(`asyncio.to_thread`) against the server in the test's loop, with socket
timeouts on the client and `asyncio.timeout` around every call. Byte-for-byte
agreement with the real memcached is test_kv_memcached_diff.py's job.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import _proc
import pytest
import pytest_asyncio
from clients import HOST, TIMEOUT, connect, wait_closed_by_server
from conftest import Start, load_example
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError, MemcacheServerError
from tornado.testing import ExpectLog

kv = load_example("kv_server")


#: Where the fake clock starts: a real-looking Unix time.
T0 = 1_800_000_000.0


class FakeClock:
    """A clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Memcache:
    """A pymemcache client whose calls run in a thread, each one bounded."""

    def __init__(self, port: int, **options: Any) -> None:
        options.setdefault("default_noreply", False)
        self.client = Client(
            (HOST, port), connect_timeout=TIMEOUT, timeout=TIMEOUT, **options
        )

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            async with asyncio.timeout(TIMEOUT):
                return await asyncio.to_thread(
                    functools.partial(method, *args, **kwargs)
                )

        return call


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def server(start: Start, clock: FakeClock) -> tuple[Any, int]:
    """A `KVServer` with the default limits and the fake clock, and its port."""
    kv_server = kv.KVServer(clock=clock)
    return kv_server, await start(kv_server)


@pytest_asyncio.fixture
async def mc(server: tuple[Any, int]) -> AsyncIterator[Memcache]:
    client = Memcache(server[1])
    try:
        yield client
    finally:
        client.client.close()


# --- pymemcache: every command ----------------------------------------------


async def test_pymemcache_set_get_and_flags(mc: Memcache) -> None:
    value = b"two\r\nlines, \x00\xff binary\r\n"
    assert await mc.set("blob", value) is True
    assert await mc.get("blob") == value
    assert await mc.set("flagged", b"x", flags=0xFFFFFFFF) is True
    reply = await mc.raw_command(b"get flagged", b"END\r\n")
    # raw_command returns the reply up to its end marker, here "END\r\n".
    assert reply == b"VALUE flagged 4294967295 1\r\nx\r\n"
    assert await mc.get("missing") is None
    assert await mc.get("missing", default=b"d") == b"d"


async def test_pymemcache_add_replace_append_prepend(mc: Memcache) -> None:
    assert await mc.add("k", b"one") is True
    assert await mc.add("k", b"two") is False
    assert await mc.get("k") == b"one"
    assert await mc.replace("k", b"mid") is True
    assert await mc.replace("nothing", b"x") is False
    assert await mc.append("k", b">>") is True
    assert await mc.prepend("k", b"<<") is True
    assert await mc.get("k") == b"<<mid>>"
    assert await mc.append("nothing", b"x") is False
    assert await mc.prepend("nothing", b"x") is False
    assert await mc.get("nothing") is None


async def test_pymemcache_gets_and_cas(mc: Memcache) -> None:
    assert await mc.set("k", b"v1") is True
    value, token = await mc.gets("k")
    assert value == b"v1"
    assert await mc.cas("k", b"v2", token) is True
    # The token is spent: the store gave k a new one.
    assert await mc.cas("k", b"v3", token) is False
    assert await mc.get("k") == b"v2"
    assert await mc.cas("missing", b"v", token) is None
    assert await mc.gets("missing") == (None, None)
    many = await mc.gets_many(["k", "missing"])
    assert list(many) == ["k"]
    assert many["k"][0] == b"v2"
    assert many["k"][1] != token


async def test_pymemcache_set_many_and_get_many(mc: Memcache) -> None:
    values = {f"key{i}": b"value %d" % i for i in range(300)}
    assert await mc.set_many(values) == []
    got = await mc.get_many([*values, "absent", "key7"])
    assert got == values
    assert await mc.delete_many(["key1", "key2", "absent"]) is True
    assert await mc.get_many(["key1", "key2", "key3"]) == {"key3": b"value 3"}


async def test_pymemcache_delete(mc: Memcache) -> None:
    await mc.set("k", b"v")
    assert await mc.delete("k") is True
    assert await mc.delete("k") is False
    assert await mc.get("k") is None


async def test_pymemcache_incr_and_decr(mc: Memcache) -> None:
    assert await mc.incr("counter", 1) is None
    await mc.set("counter", b"41")
    assert await mc.incr("counter", 1) == 42
    assert await mc.decr("counter", 50) == 0  # stops at zero
    await mc.set("counter", b"18446744073709551615")
    assert await mc.incr("counter", 2) == 1  # wraps at 2**64
    await mc.set("counter", b"100")
    assert await mc.decr("counter", 1) == 99
    # As in memcached, the shorter number keeps the old length.
    assert await mc.get("counter") == b"99 "
    assert await mc.incr("counter", 1) == 100
    await mc.set("text", b"ten")
    with pytest.raises(MemcacheClientError, match="non-numeric"):
        await mc.incr("text", 1)
    # The connection is still in sync after the error.
    assert await mc.get("text") == b"ten"


async def test_pymemcache_touch_and_expiry(mc: Memcache, clock: FakeClock) -> None:
    await mc.set("k", b"v", expire=10)
    clock.now += 9
    assert await mc.get("k") == b"v"
    assert await mc.touch("k", expire=100) is True
    clock.now += 50
    assert await mc.get("k") == b"v"
    clock.now += 50
    assert await mc.get("k") is None
    assert await mc.touch("k", expire=100) is False


async def test_pymemcache_gat_and_gats(mc: Memcache, clock: FakeClock) -> None:
    # pymemcache has no gat/gats methods; its raw_command sends them as is.
    await mc.set("k", b"v", expire=10)
    reply = await mc.raw_command(b"gat 100 k missing", b"END\r\n")
    assert reply == b"VALUE k 0 1\r\nv\r\n"
    clock.now += 50
    _, token = await mc.gets("k")
    reply = await mc.raw_command(b"gats 0 k", b"END\r\n")
    assert reply == b"VALUE k 0 1 %s\r\nv\r\n" % token
    clock.now += 10**6
    assert await mc.get("k") == b"v"  # gats 0: it never expires now


async def test_pymemcache_flush_all(mc: Memcache) -> None:
    await mc.set_many({"a": b"1", "b": b"2"})
    assert await mc.flush_all() is True
    assert await mc.get_many(["a", "b"]) == {}
    await mc.set("c", b"3")
    assert await mc.get("c") == b"3"


async def test_pymemcache_delayed_flush_all(mc: Memcache, clock: FakeClock) -> None:
    await mc.set("old", b"1")
    assert await mc.flush_all(delay=10) is True
    clock.now += 5
    assert await mc.get("old") == b"1"
    await mc.set("new", b"2")
    clock.now += 5
    # What was stored before the deadline (less memcached's second) is gone.
    assert await mc.get_many(["old", "new"]) == {}
    await mc.set("later", b"3")
    assert await mc.get("later") == b"3"


async def test_pymemcache_version_verbosity_stats_and_quit(
    mc: Memcache, server: tuple[Any, int]
) -> None:
    # Numeric first: libmemcached's tools refuse a version they cannot parse.
    assert await mc.version() == kv.VERSION.encode()
    assert kv.VERSION.split(".")[0].isdigit()
    assert await mc.raw_command(b"verbosity 1", b"\r\n") == b"OK"
    assert server[0].verbosity == 1
    await mc.set("k", b"value")
    stats = await mc.stats()
    assert stats[b"curr_items"] == 1
    assert stats[b"curr_connections"] == 1
    assert stats[b"limit_maxbytes"] == 64 * 1024 * 1024
    # set, verbosity, set, stats on this connection.
    assert stats[b"connection_commands"] == 4
    await mc.quit()
    # pymemcache reconnects on the next call; the data is still there.
    assert await mc.get("k") == b"value"


async def test_pymemcache_noreply_commands_take_effect(
    server: tuple[Any, int],
) -> None:
    # pymemcache's default: storage commands go out with "noreply".
    client = Memcache(server[1], default_noreply=True)
    try:
        assert await client.set("k", b"1") is True
        assert await client.add("k", b"2") is True  # no reply: no failure seen
        assert await client.append("k", b"0") is True
        assert await client.incr("k", 5, noreply=True) is None
        assert await client.delete("gone") is True
        assert await client.get("k") == b"15"
        assert await client.flush_all(noreply=True) is True
        assert await client.get("k") is None
    finally:
        client.client.close()


async def test_pymemcache_value_too_large_is_a_server_error_and_stays_in_sync(
    start: Start,
) -> None:
    port = await start(kv.KVServer(max_item_size=1000))
    client = Memcache(port)
    # The limit counts the item as memcached does: its header and key too.
    largest = 1000 - kv.item_size(b"k", 0, 0)
    try:
        assert await client.set("k", b"v" * largest) is True
        with pytest.raises(MemcacheServerError, match="object too large for cache"):
            await client.set("k", b"v" * (largest + 1))
        # The failed set removed the old value, as memcached's does.
        assert await client.get("k") is None
        assert await client.set("k", b"ok") is True
        assert await client.get("k") == b"ok"
    finally:
        client.client.close()


# --- the limits: key length, memory, lines, hang-ups -------------------------


class Raw:
    """A plain connection for what a client library will not send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        async with asyncio.timeout(TIMEOUT):
            await self.writer.drain()

    async def ask(self, request: bytes, reply: bytes) -> None:
        await self.send(request)
        async with asyncio.timeout(TIMEOUT):
            got = await self.reader.readexactly(len(reply))
        assert got == reply, f"{request[:80]!r} got {got!r}"


@pytest_asyncio.fixture
async def raw(server: tuple[Any, int]) -> AsyncIterator[Raw]:
    client = Raw(*await connect(server[1]))
    try:
        yield client
    finally:
        client.writer.close()


async def test_keys_of_250_bytes_are_accepted_and_251_refused(raw: Raw) -> None:
    key = b"k" * 250
    await raw.ask(b"set %s 0 0 1\r\nv\r\n" % key, b"STORED\r\n")
    await raw.ask(b"get %s\r\n" % key, b"VALUE %s 0 1\r\nv\r\nEND\r\n" % key)
    await raw.ask(b"get %sk\r\n" % key, b"CLIENT_ERROR bad command line format\r\n")
    await raw.ask(b"delete %sk\r\n" % key, b"CLIENT_ERROR bad command line format\r\n")


#: The value the small store below is filled with: ten of them fit, not
#: eleven, each charged its key and `ITEM_OVERHEAD` too.
FILLER = b"x" * 650


@pytest_asyncio.fixture
async def full_store(start: Start) -> AsyncIterator[tuple[Any, Memcache]]:
    """A `KVServer` of 10,000 bytes, full with k0 to k9 (k0 the least
    recently used), and a client of it."""
    server = kv.KVServer(max_item_size=1000, max_memory=10_000)
    client = Memcache(await start(server))
    try:
        for i in range(10):
            assert await client.set(f"k{i}", FILLER) is True
        yield server, client
    finally:
        client.client.close()


async def test_least_recently_used_items_are_evicted_to_stay_within_memory(
    full_store: tuple[Any, Memcache],
) -> None:
    server, client = full_store
    assert await client.get("k0") == FILLER  # k0 is now the most recent
    await client.set("k10", FILLER)
    assert server.store.memory <= 10_000
    assert server.store.evictions >= 1
    got = await client.get_many([f"k{i}" for i in range(11)])
    assert "k0" in got and "k10" in got
    assert "k1" not in got  # the least recently used went first
    stats = await client.stats()
    assert stats[b"evictions"] == server.store.evictions
    # Thousands of items later, the store is still within its bound.
    await client.set_many({f"many{i}": FILLER for i in range(1000)})
    assert server.store.memory <= 10_000
    assert len(server.store) <= 10_000 // (len(FILLER) + kv.ITEM_OVERHEAD)


async def test_add_of_an_existing_key_freshens_it_in_the_lru(
    full_store: tuple[Any, Memcache],
) -> None:
    _, client = full_store
    # Refused, but memcached still moves k0 to the front of its LRU.
    assert await client.add("k0", b"y") is False
    await client.set("k10", FILLER)  # evicts one item
    assert await client.get_many(["k0", "k1"]) == {"k0": FILLER}


async def test_an_incr_that_lengthens_a_number_keeps_its_flags_and_expiry(
    raw: Raw, clock: FakeClock
) -> None:
    await raw.ask(b"set n 5 10 1\r\n9\r\n", b"STORED\r\n")
    await raw.ask(b"incr n 1\r\n", b"10\r\n")  # no room in place: stored anew
    await raw.ask(b"get n\r\n", b"VALUE n 5 2\r\n10\r\nEND\r\n")
    clock.now += 10
    await raw.ask(b"get n\r\n", b"END\r\n")


async def test_a_delayed_flush_all_takes_what_is_stored_at_its_deadline(
    raw: Raw, clock: FakeClock
) -> None:
    await raw.ask(b"flush_all 10\r\n", b"OK\r\n")
    clock.now += 9  # the deadline, less memcached's second
    await raw.ask(b"set edge 0 0 1\r\ne\r\n", b"STORED\r\n")
    await raw.ask(b"get edge\r\n", b"END\r\n")
    clock.now += 1
    await raw.ask(b"set after 0 0 1\r\na\r\n", b"STORED\r\n")
    await raw.ask(b"get after\r\n", b"VALUE after 0 1\r\na\r\nEND\r\n")


async def test_a_huge_data_block_is_discarded_without_being_held(
    start: Start,
) -> None:
    server = kv.KVServer(max_item_size=1000)
    port = await start(server)
    client = Raw(*await connect(port))
    try:
        block = b"z" * (8 * 1024 * 1024)
        await client.send(b"set k 0 0 %d\r\n" % len(block))
        peak = 0
        for offset in range(0, len(block), 256 * 1024):
            await client.send(block[offset : offset + 256 * 1024])
            peak = max(peak, server.buffered_bytes)
        await client.ask(b"\r\n", b"SERVER_ERROR object too large for cache\r\n")
        # Discarded a piece at a time: never more than a piece plus a read.
        assert peak <= kv.DISCARD_CHUNK + 65536
        await client.ask(b"get k\r\n", b"END\r\n")
    finally:
        client.writer.close()


async def test_a_command_line_over_the_limit_closes_the_connection(
    start: Start,
) -> None:
    port = await start(kv.KVServer(max_line_length=100))
    client = Raw(*await connect(port))
    try:
        with ExpectLog(
            "tornado_echo.lines",
            r"127\.0\.0\.1:\d+: line longer than 100 bytes",
            level=logging.INFO,
        ):
            await client.send(b"get " + b"k " * 100 + b"\r\n")
            assert await wait_closed_by_server(client.reader) == b""
    finally:
        client.writer.close()


async def test_hangup_in_the_middle_of_a_block_is_one_info_line_and_a_close(
    raw: Raw,
) -> None:
    with ExpectLog(
        "kv_server", r"127\.0\.0\.1:\d+: closed after 3 of 12 bytes", level=logging.INFO
    ):
        await raw.send(b"set k 0 0 10\r\nabc")
        raw.writer.write_eof()
        assert await wait_closed_by_server(raw.reader) == b""


async def test_pipelined_commands_are_answered_in_order(raw: Raw) -> None:
    await raw.ask(
        b"set a 0 0 1\r\n1\r\nincr a 9\r\nget a b\r\nbogus\r\ndelete a\r\n",
        b"STORED\r\n10\r\nVALUE a 0 2\r\n10\r\nEND\r\nERROR\r\nDELETED\r\n",
    )


async def test_bare_newlines_end_commands_too(raw: Raw) -> None:
    await raw.ask(
        b"set a 0 0 2\nhi\r\nget a\n", b"STORED\r\nVALUE a 0 2\r\nhi\r\nEND\r\n"
    )


async def test_expiry_relative_absolute_and_negative(
    raw: Raw, clock: FakeClock
) -> None:
    absolute = int(T0) + 100
    await raw.ask(b"set rel 0 30 1\r\nr\r\n", b"STORED\r\n")
    await raw.ask(b"set abs 0 %d 1\r\na\r\n" % absolute, b"STORED\r\n")
    await raw.ask(b"set past 0 %d 1\r\np\r\n" % (absolute - 200), b"STORED\r\n")
    await raw.ask(b"set neg 0 -1 1\r\nn\r\n", b"STORED\r\n")
    await raw.ask(b"set forever 0 0 1\r\nf\r\n", b"STORED\r\n")
    await raw.ask(
        b"get rel abs past neg forever\r\n",
        b"VALUE rel 0 1\r\nr\r\nVALUE abs 0 1\r\na\r\nVALUE forever 0 1\r\nf\r\nEND\r\n",
    )
    clock.now += 30
    await raw.ask(
        b"get rel abs forever\r\n",
        b"VALUE abs 0 1\r\na\r\nVALUE forever 0 1\r\nf\r\nEND\r\n",
    )
    clock.now += 70
    await raw.ask(b"get rel abs forever\r\n", b"VALUE forever 0 1\r\nf\r\nEND\r\n")


@pytest.mark.parametrize(
    ("token", "u64", "i32"),
    [
        (b"0", 0, 0),
        (b"+7", 7, 7),
        (b"-7", None, -7),
        (b"-0", 0, 0),
        (b"18446744073709551615", 2**64 - 1, None),
        (b"18446744073709551616", None, None),
        (b"2147483648", 2**31, -(2**31)),
        (b"4294967297", 2**32 + 1, 1),
        (b"12\t", 12, 12),
        (b"\t12", 12, 12),
        (b"1x", None, None),
        (b"x", None, None),
        (b"", None, None),
        (b"1.5", None, None),
    ],
)
def test_numbers_are_read_as_memcached_reads_them(
    token: bytes, u64: int | None, i32: int | None
) -> None:
    assert kv.parse_u64(token) == u64
    assert kv.parse_i32(token) == i32


def test_limits_that_cannot_hold_an_item_are_refused() -> None:
    with pytest.raises(ValueError, match="max_item_size must be at least 1"):
        kv.check_limits(0, 1 << 20)
    with pytest.raises(ValueError, match="max_memory must hold"):
        kv.check_limits(1 << 20, 1 << 20)


def test_the_script_serves_pymemcache_and_refuses_bad_limits() -> None:
    script = str(Path(kv.__file__))
    with _proc.running_server([*_proc.PYTHON, script, "--port", "0"]) as (
        process,
        port,
    ):
        client = Client((HOST, port), connect_timeout=TIMEOUT, timeout=TIMEOUT)
        try:
            assert client.set("k", b"v", noreply=False) is True
            assert client.get("k") == b"v"
        finally:
            client.close()
        assert process.stop(signal.SIGTERM) == 0
        assert "Traceback" not in process.stderr()
    result = _proc.run([*_proc.PYTHON, script, "--max-item-size", "0"])
    assert result.returncode == 2
    assert "max_item_size must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr


# --- what a careless or hostile client must not cost --------------------------


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def sync(sock: socket.socket) -> None:
    """Wait until every command sent on ``sock`` so far has been answered."""
    sock.sendall(b"version\r\n")
    received = b""
    while not received.endswith(b"\r\n") or b"VERSION" not in received:
        chunk = sock.recv(1 << 20)
        assert chunk, "the server closed"
        received += chunk


def test_a_get_of_many_keys_holds_one_value_at_a_time() -> None:
    script = str(Path(kv.__file__))
    with _proc.running_server([*_proc.PYTHON, script, "--port", "0"]) as (server, port):
        with _proc.connect(port) as sock:
            largest = kv.DEFAULT_MAX_ITEM_SIZE - kv.item_size(b"k", 0, 0)
            sock.sendall(b"set k 0 0 %d noreply\r\n%s\r\n" % (largest, b"v" * largest))
            sync(sock)
            before = rss(server.proc.pid)
            # A 406-byte line for a 200 MiB reply, read slowly.
            sock.sendall(b"get" + b" k" * 200 + b"\r\n")
            peak = received = 0
            expected = 200 * (len(b"VALUE k 0 %d\r\n\r\n" % largest) + largest) + 5
            while received < expected:
                chunk = sock.recv(4 << 20)
                assert chunk, "the server closed"
                received += len(chunk)
                peak = max(peak, rss(server.proc.pid))
            assert received == expected
            # Values go out from the store as the reply is built.
            assert peak - before < 16 << 20, (before, peak)
        assert server.stop() == 0


def test_the_store_stays_within_about_max_memory_for_tiny_items() -> None:
    script = str(Path(kv.__file__))
    argv = [*_proc.PYTHON, script, "--port", "0", "--max-memory", "4"]
    with _proc.running_server(argv) as (server, port), _proc.connect(port) as sock:
        sync(sock)
        before = rss(server.proc.pid)
        # Three times what fits, each item charged what it really costs.
        for start in range(0, 40_000, 4_000):
            sock.sendall(
                b"".join(
                    b"set key%d 0 0 1 noreply\r\nv\r\n" % i
                    for i in range(start, start + 4_000)
                )
            )
        sync(sock)
        grown = rss(server.proc.pid) - before
        assert grown <= 1.25 * (4 << 20) + (2 << 20), grown


async def test_a_command_that_is_not_a_get_must_end_its_line_within_2_kib(
    raw: Raw, start: Start
) -> None:
    # A get may go on: memcached lets multi-gets be any length.
    await raw.send(b"get" + b" k" * 1500)
    await asyncio.sleep(0.1)
    await raw.ask(b"\r\n", b"END\r\n")
    with ExpectLog(
        "kv_server",
        r"127\.0\.0\.1:\d+: no end of line in a command's first 2048 bytes",
        level=logging.INFO,
    ):
        # Anything else is closed before the line's end comes, let alone
        # the 1 MiB that a get line may take.
        await raw.send(b"set k 0 0 1" + b" " * 3000)
        assert await wait_closed_by_server(raw.reader) == b""


async def test_stats_cachedump_lists_the_keys(raw: Raw, clock: FakeClock) -> None:
    await raw.ask(b"set old 0 0 1\r\no\r\n", b"STORED\r\n")
    await raw.ask(b"set new 0 100 2\r\nnn\r\n", b"STORED\r\n")
    expiry = int(T0) + 100
    await raw.ask(
        b"stats cachedump 1 0\r\n",
        b"ITEM new [2 b; %d s]\r\nITEM old [1 b; 0 s]\r\nEND\r\n" % expiry,
    )
    await raw.ask(
        b"stats cachedump 1 1\r\n", b"ITEM new [2 b; %d s]\r\nEND\r\n" % expiry
    )
    await raw.ask(b"stats cachedump 2 0\r\n", b"END\r\n")
    await raw.ask(b"stats cachedump 64 0\r\n", b"CLIENT_ERROR Illegal slab id\r\n")
    await raw.ask(b"stats cachedump 1\r\n", b"CLIENT_ERROR bad command line\r\n")
    await raw.ask(b"stats cachedump x 0\r\n", kv.BAD_FORMAT + b"\r\n")
    await raw.ask(b"stats items\r\n", b"ERROR\r\n")


@_proc.needs_tool("memcping", "libmemcached-tools")
def test_libmemcached_tools_ping_stat_dump_and_pass_memccapable() -> None:
    script = str(Path(kv.__file__))
    with _proc.running_server([*_proc.PYTHON, script, "--port", "0"]) as (server, port):
        with _proc.connect(port) as sock:
            sock.sendall(b"set alpha 0 0 1\r\na\r\nset beta 5 0 2\r\nbb\r\n")
            sync(sock)
        servers = f"--servers=127.0.0.1:{port}"
        ping = _proc.run(["memcping", servers])
        assert ping.returncode == 0, ping.stderr
        stat = _proc.run(["memcstat", servers])
        assert stat.returncode == 0, stat.stderr
        assert f"version: {kv.VERSION}" in stat.stdout
        dump = _proc.run(["memcdump", servers])
        assert dump.returncode == 0, dump.stderr
        assert sorted(dump.stdout.split()) == ["alpha", "beta"]
        capable = _proc.run(
            ["memccapable", "-h", "127.0.0.1", "-p", str(port), "-a"], 60
        )
        assert capable.returncode == 0, capable.stdout[-2000:]
        assert "All tests passed" in capable.stdout
        assert server.stop() == 0
