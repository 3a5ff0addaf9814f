"""Behaviour both echo implementations guarantee, on real loopback sockets.

Every test runs once against `EchoServer` (IOStream) and once against
`RawEchoServer` (raw fd handlers) through the ``echo`` fixture.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random

import pytest
from clients import (
    HOST,
    TIMEOUT,
    abort,
    connect,
    loop_delays_under_flood,
    roundtrip,
    wait_closed_by_server,
)
from conftest import IMPLS, EchoImpl, StartServer
from tornado.testing import ExpectLog

from tornado_echo.compat import _RawConnection
from tornado_echo.echo import LineEcho
from tornado_echo.server import EchoServer

Echo = tuple[EchoImpl, int]


async def test_small_message_is_echoed(echo: Echo) -> None:
    _, port = echo
    reader, writer = await connect(port)
    try:
        writer.write(b"hello, echo\n")
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(12) == b"hello, echo\n"
    finally:
        writer.close()


async def test_all_256_byte_values_survive(echo: Echo) -> None:
    data = bytes(range(256)) * 4
    assert await roundtrip(echo[1], data) == data


@pytest.mark.parametrize("size", [1 << 20, 32 << 20], ids=["1MiB", "32MiB"])
async def test_large_payload_with_concurrent_send_and_receive(
    echo: Echo, size: int
) -> None:
    data = random.randbytes(size)
    assert await roundtrip(echo[1], data) == data


async def test_2000_sequential_messages_on_one_connection(echo: Echo) -> None:
    reader, writer = await connect(echo[1])
    try:
        async with asyncio.timeout(TIMEOUT):
            for i in range(2000):
                message = f"message {i}\n".encode()
                writer.write(message)
                assert await reader.readexactly(len(message)) == message
    finally:
        writer.close()


@pytest.mark.parametrize(
    "data",
    [
        b"x",
        b"".join(f"line {i}\n".encode() for i in range(1000)) + b"no newline tail",
        random.Random(8).randbytes(8 << 20),
    ],
    ids=["small", "pipelined-lines", "8MiB"],
)
async def test_half_close_echoes_everything_before_closing(
    echo: Echo, data: bytes
) -> None:
    # Send everything and FIN before reading a byte: the server must still
    # flush all of it back, then close.
    reader, writer = await connect(echo[1])
    try:
        async with asyncio.timeout(TIMEOUT):
            if len(data) < 1 << 20:
                writer.write(data)
                writer.write_eof()
                received = await reader.read()
            else:
                sender = asyncio.create_task(_send_then_fin(writer, data))
                received = await reader.read()
                await sender
    finally:
        writer.close()
    assert len(received) == len(data)
    assert received == data


async def _send_then_fin(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
    writer.write_eof()


async def test_200_concurrent_clients_get_their_own_bytes_back(echo: Echo) -> None:
    rng = random.Random(200)
    payloads = [rng.randbytes(rng.randrange(1, 256 << 10)) for _ in range(200)]
    results = await asyncio.gather(*(roundtrip(echo[1], p) for p in payloads))
    assert [len(r) for r in results] == [len(p) for p in payloads]
    assert results == payloads


async def test_resetting_clients_do_not_disturb_a_working_connection(
    echo: Echo,
) -> None:
    server, port = echo
    reader, writer = await connect(port)
    try:

        async def reset_midstream() -> None:
            r, w = await connect(port)
            w.write(random.randbytes(200_000))
            async with asyncio.timeout(TIMEOUT):
                await r.readexactly(1000)
            abort(w)

        async with asyncio.timeout(TIMEOUT):
            for round_ in range(5):
                await asyncio.gather(*(reset_midstream() for _ in range(10)))
                message = f"still here {round_}\n".encode()
                writer.write(message)
                assert await reader.readexactly(len(message)) == message
            # Every reset connection is gone from the server's books.
            while server.connection_count != 1:
                await asyncio.sleep(0.01)
    finally:
        writer.close()


async def test_a_flooding_client_cannot_monopolise_the_event_loop(echo: Echo) -> None:
    # IOStream completes reads and writes inline while the socket is ready;
    # without a time slice one busy connection would starve all the others.
    delays = await loop_delays_under_flood(echo[1], b"x" * 65536)
    assert max(delays) < 0.5, delays


async def test_idle_connections_do_not_block_others(echo: Echo) -> None:
    port = echo[1]
    idle = [await connect(port) for _ in range(50)]
    try:
        data = random.randbytes(100_000)
        assert await roundtrip(port, data) == data
    finally:
        for _, w in idle:
            w.close()


async def test_500_rapid_connect_close(echo: Echo) -> None:
    server, port = echo
    async with asyncio.timeout(TIMEOUT):
        for _ in range(500):
            _, writer = await asyncio.open_connection(HOST, port)
            writer.close()
            await writer.wait_closed()
    # The server survived and forgot them all.
    data = b"after the storm"
    assert await roundtrip(port, data) == data
    async with asyncio.timeout(TIMEOUT):
        while server.connection_count:
            await asyncio.sleep(0.01)


async def test_client_that_never_reads_cannot_grow_server_buffers(
    echo: Echo,
) -> None:
    server, port = echo
    _, writer = await connect(port)
    chunk = b"z" * (1 << 20)
    sent = 0
    limit = 256 << 20
    try:
        # Keep sending without reading until our own writes stall: the
        # server has stopped reading from us.
        while sent < limit:
            writer.write(chunk)
            try:
                await asyncio.wait_for(writer.drain(), 1.0)
            except TimeoutError:
                break
            sent += len(chunk)
        assert sent < limit, "the server kept reading from a client that never reads"
        # What the server holds is about one read chunk, not what we sent.
        assert server.buffered_bytes <= 2 * 65536
        assert server.connection_count == 1
    finally:
        abort(writer)


async def test_shutdown_drains_in_flight_connections_and_refuses_new_ones(
    echo: Echo,
) -> None:
    server, port = echo
    reader, writer = await connect(port)
    writer.write(b"before")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readexactly(6) == b"before"
        shutdown = asyncio.create_task(server.shutdown(timeout=TIMEOUT))
        await asyncio.sleep(0)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(HOST, port)
        # The in-flight connection is still served during the drain ...
        writer.write(b"during")
        assert await reader.readexactly(6) == b"during"
        assert not shutdown.done()
        # ... and counts as drained once the client finishes.
        writer.write_eof()
        assert await reader.read() == b""
        result = await shutdown
    writer.close()
    assert (result.drained, result.closed) == (1, 0)
    assert server.connection_count == 0


async def test_shutdown_closes_connections_still_open_at_the_deadline(
    echo: Echo,
) -> None:
    server, port = echo
    clients = [await connect(port) for _ in range(3)]
    async with asyncio.timeout(TIMEOUT):
        while server.connection_count < 3:
            await asyncio.sleep(0.01)
        result = await server.shutdown(timeout=0.2)
        for reader, _ in clients:
            assert await reader.read() == b""
    for _, writer in clients:
        writer.close()
    assert (result.drained, result.closed) == (0, 3)
    assert server.connection_count == 0


async def test_handler_exception_closes_that_stream_and_is_logged(
    echo: Echo, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, port = echo

    def explode(*args: object) -> None:
        raise RuntimeError("boom")

    if isinstance(server, EchoServer):
        monkeypatch.setattr(server, "serve_stream", explode)
    else:
        monkeypatch.setattr(_RawConnection, "_on_readable", explode)
    with ExpectLog(
        logging.getLogger("tornado.application"),
        r"Uncaught exception serving 127\.0\.0\.1:\d+",
    ):
        reader, writer = await connect(port)
        writer.write(b"trigger")
        # Closed, with nothing echoed (unread input may turn FIN into RST).
        assert await wait_closed_by_server(reader) == b""
    writer.close()
    async with asyncio.timeout(TIMEOUT):
        while server.connection_count:
            await asyncio.sleep(0.01)
    monkeypatch.undo()
    # The server still serves everyone else.
    assert await roundtrip(port, b"fine") == b"fine"


async def test_closing_first_loses_nothing_the_client_has_yet_to_read(
    impl: str, start_tcp_server: StartServer
) -> None:
    # A line-mode connection ends at an overlong line while the client is
    # still sending and has read nothing. A plain close() with its input
    # unread would reset the connection and destroy the ~1 MB of echoes
    # still in the kernel buffers.
    finished = asyncio.Event()

    class Watched(LineEcho):
        def receive_data(self, data: bytes) -> bytes:
            out = super().receive_data(data)
            if self.finished:
                finished.set()
            return out

    server = IMPLS[impl](echo=functools.partial(Watched, max_line_length=8))
    port = (await start_tcp_server(server)).port
    owed = b"ok\n" * 300_000
    reader, writer = await connect(port)
    try:
        with ExpectLog(
            logging.getLogger("tornado_echo.lines"),
            ".*line longer than 8",
            level=logging.INFO,
        ):
            async with asyncio.timeout(TIMEOUT):
                writer.write(owed + b"x" * 200_000)
                await writer.drain()
                await finished.wait()
                while server.buffered_bytes:
                    await asyncio.sleep(0.01)
                # Give a careless server time to close before we read.
                await asyncio.sleep(0.2)
                received = await reader.read()
    finally:
        writer.close()
    assert len(received) == len(owed)
