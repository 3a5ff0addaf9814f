"""The LineServer examples (uppercase, chat) over real loopback sockets.

The key-value example has test_kv_server.py and test_kv_memcached_diff.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import _proc
from clients import HOST, TIMEOUT, connect, roundtrip, wait_closed_by_server
from conftest import EXAMPLES, Start, load_example
from tornado.testing import ExpectLog

uppercase = load_example("uppercase_server")
chat = load_example("chat_server")

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
