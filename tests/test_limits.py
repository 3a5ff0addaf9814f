"""Limits, timeouts and stats, on every server: `.EchoServer`, `.RawEchoServer`
and a `.LineServer` subclass, through real loopback sockets."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest
from clients import HOST, TIMEOUT, connect, roundtrip, wait_closed_by_server
from conftest import SERVER_CLASSES, Start
from tornado.testing import ExpectLog

from tornado_echo import LineServer
from tornado_echo.echo import LineEcho
from tornado_echo.limits import Limits, default_max_connections

CONN_LOG = "tornado_echo.connection"


async def exchange(port: int, payload: bytes = b"ping\n") -> None:
    reader, writer = await connect(port)
    try:
        writer.write(payload)
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(len(payload)) == payload
    finally:
        writer.close()


async def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def test_limits_have_safe_defaults_and_reject_bad_values() -> None:
    limits = Limits()
    assert limits.connection_cap() == default_max_connections() >= 1
    assert limits.idle_timeout == 300 and limits.write_timeout == 60
    assert limits.handshake_timeout == 10
    for bad in (
        {"max_connections": 0},
        {"idle_timeout": -1},
        {"write_timeout": float("nan")},
        {"handshake_timeout": float("inf")},
    ):
        with pytest.raises(ValueError, match="must be"):
            Limits(**bad)
    assert Limits(idle_timeout=0, write_timeout=0).sweep_interval() is None
    assert Limits(idle_timeout=0.4, write_timeout=0).sweep_interval() == 0.05


async def test_at_max_connections_new_clients_wait_until_a_slot_frees(
    make: Callable[..., Any], start: Start
) -> None:
    server = make(limits=Limits(max_connections=2))
    port = await start(server)
    with ExpectLog(CONN_LOG, "connection limit reached", level=logging.WARNING):
        first = await connect(port)
        second = await connect(port)
        for _, writer in (first, second):
            writer.write(b"hi\n")
        for reader, _ in (first, second):
            async with asyncio.timeout(TIMEOUT):
                assert await reader.readexactly(3) == b"hi\n"
        assert server.connection_count == 2
    # The third client's connect succeeds (the kernel queues it in the
    # backlog) but nobody serves it while both slots are taken.
    reader, writer = await connect(port)
    writer.write(b"third\n")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await reader.readexactly(6)
    assert server.connection_count == 2
    with ExpectLog(CONN_LOG, "below the connection limit", level=logging.INFO):
        first[1].close()
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(6) == b"third\n"
        second[1].close()
        writer.close()
        await wait_until(lambda: server.connection_count == 0)
    # Twice: the third client took the freed slot, reaching the cap again.
    assert server.stats.limit_reached == 2
    assert server.stats.connections_total == 3


async def test_idle_connections_are_closed_and_busy_ones_are_not(
    make: Callable[..., Any], start: Start
) -> None:
    server = make(limits=Limits(idle_timeout=0.4, write_timeout=0))
    port = await start(server)
    idle_reader, idle_writer = await connect(port)
    busy_reader, busy_writer = await connect(port)
    with ExpectLog(CONN_LOG, r".*: idle for 0\.4s; closing", level=logging.INFO):
        # The busy client talks every 50 ms for longer than the timeout.
        for _ in range(20):
            busy_writer.write(b"x\n")
            async with asyncio.timeout(TIMEOUT):
                assert await busy_reader.readexactly(2) == b"x\n"
            await asyncio.sleep(0.05)
        async with asyncio.timeout(TIMEOUT):
            assert await wait_closed_by_server(idle_reader) == b""
    busy_writer.write(b"still here\n")
    async with asyncio.timeout(TIMEOUT):
        assert await busy_reader.readexactly(11) == b"still here\n"
    assert server.stats.idle_timeouts == 1
    idle_writer.close()
    busy_writer.close()


async def test_a_client_that_reads_nothing_is_closed_after_the_write_timeout(
    make: Callable[..., Any], start: Start
) -> None:
    server = make(limits=Limits(idle_timeout=0, write_timeout=0.4))
    port = await start(server)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect((HOST, port))
    sock.setblocking(False)
    line = b"z" * 1023 + b"\n"
    try:
        with ExpectLog(
            CONN_LOG, r".*: took none of our pending data", level=logging.INFO
        ):
            # Send without reading until the server stops taking our data:
            # its answers fill our receive buffer, then its send buffer.
            async with asyncio.timeout(TIMEOUT):
                while server.stats.write_timeouts == 0:
                    try:
                        sock.send(line)
                    except BlockingIOError:
                        await asyncio.sleep(0.02)
                    except OSError:
                        break  # closed by the server meanwhile
            await wait_until(lambda: server.connection_count == 0)
        assert server.stats.write_timeouts == 1
        assert server.stats.idle_timeouts == 0
    finally:
        sock.close()


async def test_stats_count_connections_and_bytes(
    make: Callable[..., Any], start: Start
) -> None:
    server = make()
    port = await start(server)
    payloads = [b"a\n" * 1000, b"bb\n" * 3000]
    for payload in payloads:
        assert await roundtrip(port, payload) == payload
    await wait_until(lambda: server.connection_count == 0)
    stats = server.stats
    total = sum(map(len, payloads))
    assert (stats.connections_total, stats.connections_open) == (2, 0)
    assert stats.bytes_in == stats.bytes_out == total
    if isinstance(server, LineServer):
        assert stats.lines == 4000
    # While a connection is open, its bytes are already counted.
    reader, writer = await connect(port)
    writer.write(b"live\n")
    async with asyncio.timeout(TIMEOUT):
        await reader.readexactly(5)
    await wait_until(lambda: server.stats.bytes_out == total + 5)
    assert server.stats.connections_open == 1
    writer.close()


@pytest.mark.parametrize("driver", ["stream", "compat"])
async def test_line_echo_counts_lines_and_overlong_lines(
    driver: str, start: Start
) -> None:
    def protocol(peer: str) -> LineEcho:
        return LineEcho(peer, max_line_length=8, on_long_line="skip")

    server = SERVER_CLASSES[driver](echo=protocol)
    port = await start(server)
    # The first chunk takes the whole-lines shortcut, the second the framer.
    with ExpectLog("tornado_echo.lines", r".*line longer than 8", level=logging.INFO):
        assert await roundtrip(port, b"one\ntwo\n") == b"one\ntwo\n"
        assert await roundtrip(port, b"three\nfar too long\nfour") == b"three\nfour"
    await wait_until(lambda: server.connection_count == 0)
    assert (server.stats.lines, server.stats.lines_too_long) == (3, 1)


async def test_shutdown_counts_drained_and_force_closed_connections(
    make: Callable[..., Any],
) -> None:
    from tornado.testing import bind_unused_port

    server = make()
    sock, port = bind_unused_port()
    server.add_sockets([sock])
    leaving = await connect(port)
    staying = await connect(port)
    await exchange(port)
    await wait_until(lambda: server.connection_count == 2)

    async def leave_soon() -> None:
        await asyncio.sleep(0.1)
        leaving[1].write_eof()

    task = asyncio.create_task(leave_soon())
    with ExpectLog(CONN_LOG, "shutdown: 1 connection", level=logging.INFO):
        result = await server.shutdown(timeout=0.5)
    await task
    assert (result.drained, result.closed) == (1, 1)
    stats = server.stats
    assert (stats.connections_drained, stats.connections_force_closed) == (1, 1)
    for _, writer in (leaving, staying):
        writer.close()
