"""The LineServer examples (uppercase, chat, key-value) over real loopback sockets."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import _proc
import pytest
import pytest_asyncio
from clients import HOST, TIMEOUT, connect, roundtrip, wait_closed_by_server
from conftest import Start
from tornado.testing import ExpectLog

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py``; examples/ is not a package."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


uppercase = load_example("uppercase_server")
chat = load_example("chat_server")
kv = load_example("kv_server")

CHAT_LOG = logging.getLogger("chat_server")


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds, failing after TIMEOUT."""
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


# --- uppercase_server.py ---------------------------------------------------


async def test_uppercase_server_answers_each_line_in_upper_case(
    start: Start,
) -> None:
    port = await start(uppercase.UppercaseServer())
    got = await roundtrip(port, b"hello\nMixed Case 42\n\nlast one\n")
    assert got == b"HELLO\nMIXED CASE 42\n\nLAST ONE\n"


def test_uppercase_script_serves_on_a_free_port_and_exits_0_on_sigterm() -> None:
    argv = [*_proc.PYTHON, str(EXAMPLES / "uppercase_server.py"), "--port", "0"]
    with _proc.running_server(argv) as (server, port):
        with _proc.connect(port) as sock:
            assert _proc.exchange(sock, b"shout this\n") == b"SHOUT THIS\n"
        assert server.stop() == 0


# --- chat_server.py --------------------------------------------------------


class ChatClient:
    """A chat participant that has been greeted, so the room knows it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        host, port = writer.get_extra_info("sockname")[:2]
        self.name = f"{host}:{port}".encode()

    @classmethod
    async def join(cls, port: int, *, slow: bool = False) -> ChatClient:
        """Connect and read the greeting; a ``slow`` client then reads no more."""
        if slow:
            reader, writer = await connect_slow_reader(port)
        else:
            reader, writer = await connect(port)
        client = cls(reader, writer)
        async with asyncio.timeout(TIMEOUT):
            greeting = await reader.readline()
        assert greeting == b"* welcome, you are " + client.name + b"\n"
        return client

    async def readline(self) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            return await self.reader.readline()


async def connect_slow_reader(
    port: int,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """`connect`, with as little buffering on the client side as possible."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Set before connecting, so that the window it advertises is small too.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    async with asyncio.timeout(TIMEOUT):
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
        # A tiny limit: asyncio stops reading from the socket for us once a
        # couple of KiB wait unread.
        return await asyncio.open_connection(sock=sock, limit=1024)


def writer_tasks() -> list[asyncio.Task[Any]]:
    """The chat server's live writer tasks, found by the name it gives them."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("chat writer")]


async def test_chat_line_reaches_every_other_client_but_not_its_sender(
    start: Start,
) -> None:
    port = await start(chat.ChatServer())
    a, b, c = [await ChatClient.join(port) for _ in range(3)]
    try:
        a.writer.write(b"hello room\n")
        assert await b.readline() == a.name + b": hello room\n"
        assert await c.readline() == a.name + b": hello room\n"
        # Had a's line come back to a, it would be queued ahead of b's.
        b.writer.write(b"hi a\n")
        assert await a.readline() == b.name + b": hi a\n"
        assert await c.readline() == b.name + b": hi a\n"
    finally:
        for client in (a, b, c):
            client.writer.close()


#: Enough to overflow a stalled client's outbox on top of everything the
#: kernel buffers for it (several MiB with Linux's default autotuning).
MAX_FLOOD_LINES = 30_000


def flood_line(i: int) -> bytes:
    return b"%06d " % i + b"x" * 1016 + b"\n"  # 1 KiB


async def test_chat_disconnects_a_slow_client_and_the_others_get_every_line(
    start: Start,
) -> None:
    server = chat.ChatServer()
    port = await start(server)
    sender = await ChatClient.join(port)
    fast = await ChatClient.join(port)
    slow = await ChatClient.join(port, slow=True)
    done = sender.name + b": done\n"

    async def flood() -> int:
        """Send 1 KiB lines until the slow client is gone; return how many."""
        sent = 0
        while server.connection_count == 3:
            assert sent < MAX_FLOOD_LINES, "the slow client was never disconnected"
            sender.writer.write(b"".join(flood_line(sent + i) for i in range(50)))
            await sender.writer.drain()
            sent += 50
        sender.writer.write(b"done\n")
        return sent

    async def receive() -> list[bytes]:
        lines = []
        while (line := await fast.reader.readline()) != done:
            assert line, "the fast client was disconnected"
            lines.append(line)
        return lines

    slow_name = slow.name.decode().replace(".", r"\.")
    try:
        with ExpectLog(
            CHAT_LOG,
            rf"{slow_name}: more than 100 lines behind, disconnecting",
            level=logging.WARNING,
        ) as expect:
            async with asyncio.timeout(TIMEOUT), asyncio.TaskGroup() as tasks:
                flooding = tasks.create_task(flood())
                receiving = tasks.create_task(receive())
            left_for_slow = await wait_closed_by_server(slow.reader)
        assert expect.matched == 1
        expected = [
            sender.name + b": " + flood_line(i) for i in range(flooding.result())
        ]
        assert receiving.result() == expected
        # The slow client got an in-order prefix of the traffic, then the close.
        everything = b"".join(expected)
        assert len(left_for_slow) < len(everything)
        assert everything.startswith(left_for_slow)
        # Its writer task went with it; the other two are still running.
        assert len(writer_tasks()) == 2
    finally:
        for client in (sender, fast, slow):
            client.writer.close()


async def test_chat_writer_tasks_end_with_their_connections(
    start: Start,
) -> None:
    server = chat.ChatServer()
    port = await start(server)
    clients = [await ChatClient.join(port) for _ in range(3)]
    assert len(writer_tasks()) == 3
    for client in clients:
        client.writer.close()
    await wait_until(lambda: server.connection_count == 0)
    assert writer_tasks() == []


# --- kv_server.py ----------------------------------------------------------


class KVClient:
    """One connection to a key-value server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> KVClient:
        return cls(*await connect(port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        async with asyncio.timeout(TIMEOUT):
            await self.writer.drain()

    async def ask(self, request: bytes, reply: bytes) -> None:
        """Send ``request`` and check that exactly ``reply`` comes next."""
        await self.send(request)
        async with asyncio.timeout(TIMEOUT):
            got = await self.reader.readexactly(len(reply))
        assert got == reply, f"{request!r} got {got!r}"

    async def assert_still_works(self) -> None:
        await self.ask(b"set alive 3\r\nyes\r\n", b"STORED\r\n")
        await self.ask(b"get alive\r\n", b"VALUE alive 3\r\nyes\r\nEND\r\n")


@pytest_asyncio.fixture
async def kv_client(start: Start) -> AsyncIterator[KVClient]:
    """A connection to a fresh `KVServer` with the default limits."""
    client = await KVClient.open(await start(kv.KVServer()))
    try:
        yield client
    finally:
        client.writer.close()


async def test_kv_set_then_get_returns_the_exact_bytes(kv_client: KVClient) -> None:
    value = b"two\r\nlines and \x00\xff\x80 binary\r\n"
    await kv_client.ask(b"set blob %d\r\n%s\r\n" % (len(value), value), b"STORED\r\n")
    await kv_client.ask(
        b"get blob\r\n", b"VALUE blob %d\r\n%s\r\nEND\r\n" % (len(value), value)
    )
    # Overwriting replaces the value; an empty value is a value.
    await kv_client.ask(b"set blob 0\r\n\r\n", b"STORED\r\n")
    await kv_client.ask(b"get blob\r\n", b"VALUE blob 0\r\n\r\nEND\r\n")


async def test_kv_values_are_shared_between_connections(
    start: Start,
) -> None:
    port = await start(kv.KVServer())
    alice, bob = await KVClient.open(port), await KVClient.open(port)
    try:
        await alice.ask(b"set k 2\r\nhi\r\n", b"STORED\r\n")
        await bob.ask(b"get k\r\n", b"VALUE k 2\r\nhi\r\nEND\r\n")
    finally:
        alice.writer.close()
        bob.writer.close()


async def test_kv_get_of_a_missing_key_is_just_end(kv_client: KVClient) -> None:
    await kv_client.ask(b"get nothing\r\n", b"END\r\n")


async def test_kv_delete_reports_deleted_then_not_found(kv_client: KVClient) -> None:
    await kv_client.ask(b"set k 1\r\nv\r\n", b"STORED\r\n")
    await kv_client.ask(b"delete k\r\n", b"DELETED\r\n")
    await kv_client.ask(b"get k\r\n", b"END\r\n")
    await kv_client.ask(b"delete k\r\n", b"NOT_FOUND\r\n")


async def test_kv_data_block_split_across_sends_with_pauses(
    kv_client: KVClient,
) -> None:
    # Splits inside the command, the block, and both of their \r\n.
    pieces = [b"set k 1", b"2\r", b"\nhel", b"lo\r", b"\nworld", b"\r", b"\n"]
    for piece in pieces:
        await kv_client.send(piece)
        await asyncio.sleep(0.02)
    await kv_client.ask(b"", b"STORED\r\n")
    await kv_client.ask(b"get k\r\n", b"VALUE k 12\r\nhello\r\nworld\r\nEND\r\n")


BAD_KEY = b"CLIENT_ERROR key must be 1 to 250 bytes with no control characters\r\n"
BAD_LENGTH = b"CLIENT_ERROR length must be a non-negative integer\r\n"


@pytest.mark.parametrize(
    ("request_", "reply"),
    [
        (b"flush_all\r\n", b"ERROR\r\n"),
        (b"\r\n", b"ERROR\r\n"),
        (b"GET k\r\n", b"ERROR\r\n"),
        (b"quit now\r\n", b"ERROR\r\n"),
        (b"get\r\n", b"CLIENT_ERROR usage: get <key>\r\n"),
        (b"get a b\r\n", b"CLIENT_ERROR usage: get <key>\r\n"),
        (b"get  a\r\n", b"CLIENT_ERROR usage: get <key>\r\n"),
        (b"delete\r\n", b"CLIENT_ERROR usage: delete <key>\r\n"),
        (b"set k\r\n", b"CLIENT_ERROR usage: set <key> <bytes>\r\n"),
        (b"set k 1 2\r\n", b"CLIENT_ERROR usage: set <key> <bytes>\r\n"),
        (b"set k x\r\n", BAD_LENGTH),
        (b"set k -1\r\n", BAD_LENGTH),
        (b"set k +1\r\n", BAD_LENGTH),
        (b"set k 1.5\r\n", BAD_LENGTH),
        (b"set k \r\n", BAD_LENGTH),
        (b"get \r\n", BAD_KEY),
        (b"get " + b"k" * 251 + b"\r\n", BAD_KEY),
        (b"get a\x01b\r\n", BAD_KEY),
        (b"get a\tb\r\n", BAD_KEY),
        (b"delete a\x7fb\r\n", BAD_KEY),
        # The block of a set with a bad key is consumed, not run as a command.
        (b"set a\x00b 3\r\nabc\r\n", BAD_KEY),
        (b"set  3\r\nabc\r\n", BAD_KEY),
        (b"set k 3\r\nabcXY", b"CLIENT_ERROR bad data chunk\r\n"),
        (b"set k 0\r\nXY", b"CLIENT_ERROR bad data chunk\r\n"),
    ],
    ids=repr,
)
async def test_kv_malformed_command_is_answered_and_the_connection_keeps_working(
    kv_client: KVClient, request_: bytes, reply: bytes
) -> None:
    await kv_client.ask(request_, reply)
    # Nothing was stored under "k" by the failed command.
    await kv_client.ask(b"get k\r\n", b"END\r\n")
    await kv_client.assert_still_works()


async def test_kv_longest_key_is_accepted(kv_client: KVClient) -> None:
    key = b"k" * 250
    await kv_client.ask(b"set %s 1\r\nv\r\n" % key, b"STORED\r\n")
    await kv_client.ask(b"get %s\r\n" % key, b"VALUE %s 1\r\nv\r\nEND\r\n" % key)


async def test_kv_overlong_command_line_is_refused_and_skipped(
    kv_client: KVClient,
) -> None:
    with ExpectLog(
        "tornado_echo.lines",
        r"127\.0\.0\.1:\d+: line longer than 1024 bytes",
        level=logging.INFO,
    ):
        await kv_client.ask(
            b"get " + b"k" * 5000 + b"\r\n", b"CLIENT_ERROR line too long\r\n"
        )
    await kv_client.assert_still_works()


async def test_kv_value_too_large_is_refused_and_the_connection_closed(
    start: Start,
) -> None:
    port = await start(kv.KVServer(max_value_size=16))
    client = await KVClient.open(port)
    try:
        await client.ask(b"set k 16\r\n" + b"v" * 16 + b"\r\n", b"STORED\r\n")
        # Only the command line is sent: the block would never be read.
        await client.ask(b"set k 17\r\n", b"CLIENT_ERROR value too large\r\n")
        assert await wait_closed_by_server(client.reader) == b""
    finally:
        client.writer.close()
    client = await KVClient.open(port)
    try:
        await client.ask(b"get k\r\n", b"VALUE k 16\r\n" + b"v" * 16 + b"\r\nEND\r\n")
    finally:
        client.writer.close()


async def test_kv_quit_closes_the_connection(kv_client: KVClient) -> None:
    await kv_client.ask(b"get k\r\n", b"END\r\n")
    await kv_client.send(b"quit\r\n")
    assert await wait_closed_by_server(kv_client.reader) == b""


async def test_kv_hangup_in_the_middle_of_a_block_is_one_info_line_and_a_close(
    kv_client: KVClient,
) -> None:
    # Left to LineServer, the IncompleteReadError would be logged as an
    # uncaught exception, with a traceback, on tornado.application.
    with ExpectLog(
        "kv_server", r"127\.0\.0\.1:\d+: closed after 3 of 12 bytes", level=logging.INFO
    ):
        await kv_client.send(b"set k 10\r\nabc")
        kv_client.writer.write_eof()
        assert await wait_closed_by_server(kv_client.reader) == b""
