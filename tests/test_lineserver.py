"""LineServer over real loopback sockets (pytest-asyncio style)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import textwrap
from pathlib import Path
from typing import Any

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
from conftest import Start
from tornado.testing import ExpectLog

from tornado_echo import LineConnection, LineServer

LONG_LINE_LOG = (
    logging.getLogger("tornado_echo.lines"),
    r"127\.0\.0\.1:\d+: line longer than",
)


class Upper(LineServer):
    async def handle_line(self, conn: LineConnection, line: bytes) -> bytes:
        return line.upper()


async def test_1000_pipelined_lines_in_one_send_are_answered_in_order(
    start: Start,
) -> None:
    port = await start(Upper())
    lines = [f"line number {i}".encode() for i in range(1000)]
    received = await roundtrip(port, b"".join(line + b"\n" for line in lines))
    assert received.split(b"\n") == [line.upper() for line in lines] + [b""]


async def test_a_client_pipelining_without_pause_cannot_monopolise_the_loop(
    start: Start,
) -> None:
    port = await start(Upper())
    delays = await loop_delays_under_flood(port, b"x" * 100 + b"\n")
    assert max(delays) < 0.5, delays


async def test_100_concurrent_clients(start: Start) -> None:
    port = await start(Upper())

    async def client(i: int) -> bytes:
        data = b"".join(f"client {i} line {j}\n".encode() for j in range(50))
        return await roundtrip(port, data)

    results = await asyncio.gather(*(client(i) for i in range(100)))
    for i, got in enumerate(results):
        assert got == b"".join(f"CLIENT {i} LINE {j}\n".encode() for j in range(50))


async def test_str_replies_are_encoded_and_none_sends_nothing(
    start: Start,
) -> None:
    class Words(LineServer):
        encoding = "utf-8"

        async def handle_line(self, conn: LineConnection, line: bytes) -> str | None:
            return None if line == b"quiet" else f"«{line.decode()}»"

    port = await start(Words())
    assert await roundtrip(port, b"a\nquiet\nb\n") == "«a»\n«b»\n".encode()


@pytest.mark.parametrize("delimiter", [b"\r\n", b"END"])
async def test_custom_delimiter(start: Start, delimiter: bytes) -> None:
    port = await start(Upper(delimiter=delimiter))
    data = delimiter.join([b"one", b"two\nstill two", b""])
    expected = delimiter.join([b"ONE", b"TWO\nSTILL TWO", b""])
    assert await roundtrip(port, data) == expected


async def test_close_policy_never_delivers_the_line_and_closes_after_replies(
    start: Start,
) -> None:
    seen: list[bytes] = []

    class Recorder(Upper):
        async def handle_line(self, conn: LineConnection, line: bytes) -> bytes:
            seen.append(line)
            return line.upper()

    port = await start(Recorder(max_line_length=8))
    with ExpectLog(*LONG_LINE_LOG, level=logging.INFO):
        reader, writer = await connect(port)
        writer.write(b"first\n" + b"x" * 9 + b"\nafter\n")
        received = await wait_closed_by_server(reader)
    writer.close()
    assert received == b"FIRST\n"
    assert seen == [b"first"]


async def test_close_policy_sends_what_is_owed_before_closing(
    start: Start,
) -> None:
    port = await start(Upper(max_line_length=8))
    with ExpectLog(*LONG_LINE_LOG, level=logging.INFO):
        reader, writer = await connect(port)
        writer.write(b"first\n")
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(6) == b"FIRST\n"
        writer.write(b"y" * 100)
        assert await wait_closed_by_server(reader) == b""
    writer.close()


async def test_skip_policy_discards_the_line_and_stays_in_sync(
    start: Start,
) -> None:
    port = await start(Upper(max_line_length=8, on_long_line="skip"))
    with ExpectLog(*LONG_LINE_LOG, level=logging.INFO):
        got = await roundtrip(
            port, b"a\n" + b"x" * 9 + b"\nb\n" + b"y" * 50_000 + b"\nc\n"
        )
    assert got == b"A\nB\nC\n"


async def test_reply_policy_sends_one_error_line_and_continues(
    start: Start,
) -> None:
    port = await start(Upper(max_line_length=8, on_long_line="reply"))
    with ExpectLog(*LONG_LINE_LOG, level=logging.INFO):
        got = await roundtrip(port, b"a\n" + b"x" * 100_000 + b"\nb\n")
    assert got == b"A\nERROR line too long\nB\n"


async def test_line_of_exactly_the_cap_is_delivered(start: Start) -> None:
    port = await start(Upper(max_line_length=8, on_long_line="reply"))
    assert await roundtrip(port, b"x" * 8 + b"\n", chunk=3) == b"X" * 8 + b"\n"


async def test_endless_line_keeps_memory_bounded_and_others_unaffected(
    start: Start,
) -> None:
    server = Upper(max_line_length=1024, on_long_line="skip")
    port = await start(server)
    chunk = b"z" * 65536
    peak = 0
    with ExpectLog(*LONG_LINE_LOG, level=logging.INFO):
        _, flooder = await connect(port)
        async with asyncio.timeout(TIMEOUT):
            for i in range(320):  # 20 MiB, no delimiter
                flooder.write(chunk)
                await flooder.drain()
                peak = max(peak, server.buffered_bytes)
                if i % 64 == 0:
                    assert await roundtrip(port, b"hello\n") == b"HELLO\n"
    abort(flooder)
    # The framer keeps at most the cap plus about one read.
    assert peak <= 1024 + 2 * 65536


class ShortCommands(Upper):
    """Only a line starting with "long " may go past 8 bytes."""

    partial_line_check = 8

    def check_partial_line(self, conn: LineConnection, head: bytes) -> None:
        self.heads.append(head)
        if not head.startswith(b"long "):
            conn.close()

    heads: list[bytes]


async def test_a_line_can_be_refused_before_its_delimiter_arrives(
    start: Start,
) -> None:
    server = ShortCommands()
    server.heads = []
    port = await start(server)
    reader, writer = await connect(port)
    try:
        # Short lines, and a long one that may be long, are not shown.
        writer.write(b"short\nlong " + b"x" * 100)
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(6) == b"SHORT\n"
        writer.write(b"\n")
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(106) == b"LONG " + b"X" * 100 + b"\n"
        assert server.heads == [b"long xxx"]  # once, with its first 8 bytes
        # Any other line is closed on before its end is buffered.
        writer.write(b"other" + b"y" * 100)
        assert await wait_closed_by_server(reader) == b""
        assert server.heads == [b"long xxx", b"otheryyy"]
    finally:
        writer.close()


async def test_half_close_answers_all_lines_then_runs_the_eof_hook(
    start: Start,
) -> None:
    events: list[object] = []

    class Tail(Upper):
        async def handle_eof(self, conn: LineConnection, tail: bytes) -> None:
            events.append(tail)
            await conn.send_line(b"tail was " + tail)

        async def on_disconnect(self, conn: LineConnection) -> None:
            events.append("disconnected")

    port = await start(Tail())
    data = b"".join(f"{i}\n".encode() for i in range(500)) + b"incomplete"
    got = await roundtrip(port, data)
    expected = (
        b"".join(f"{i}\n".encode() for i in range(500)) + b"tail was incomplete\n"
    )
    assert got == expected
    assert events == [b"incomplete", "disconnected"]


async def test_default_eof_hook_ignores_an_incomplete_command(
    start: Start,
) -> None:
    port = await start(Upper())
    assert await roundtrip(port, b"run\nrm -rf") == b"RUN\n"


class LineEchoServer(LineServer):
    """Echoes lines, and the tail at EOF: a write after the client's FIN."""

    async def handle_line(self, conn: LineConnection, line: bytes) -> bytes:
        return line

    async def handle_eof(self, conn: LineConnection, tail: bytes) -> None:
        await conn.write(tail)


async def test_eof_hook_can_still_write_after_the_clients_fin(start: Start) -> None:
    port = await start(LineEchoServer(delimiter=b"\r\n"))
    rng = random.Random(1)
    data = b"".join(
        rng.randbytes(rng.randrange(200)).replace(b"\r", b"") + b"\r\n"
        for _ in range(2000)
    )
    data += b"unterminated\r"
    assert await roundtrip(port, data, chunk=1000) == data


async def test_connection_hooks_and_per_connection_state(start: Start) -> None:
    class Counter(LineServer):
        async def on_connect(self, conn: LineConnection) -> None:
            conn.count = 0  # type: ignore[attr-defined]
            await conn.send_line("welcome")

        async def handle_line(self, conn: LineConnection, line: bytes) -> str:
            conn.count += 1  # type: ignore[attr-defined]
            return str(conn.count)

    port = await start(Counter())
    assert await roundtrip(port, b"a\nb\nc\n") == b"welcome\n1\n2\n3\n"


async def test_raw_mode_reads_exact_blocks_between_lines(start: Start) -> None:
    class Blocks(LineServer):
        async def handle_line(self, conn: LineConnection, line: bytes) -> bytes:
            if line.startswith(b"block "):
                data = await conn.read_exactly(int(line.split()[1]))
                return b"block of %d: %s" % (len(data), data.replace(b"\n", b"|"))
            return line

    port = await start(Blocks())
    got = await roundtrip(port, b"block 8\nab\ncd\nefafter\n", chunk=2)
    assert got == b"block of 8: ab|cd|ef\nafter\n"


async def test_shutdown_drains_line_connections(start: Start) -> None:
    server = Upper()
    port = await start(server)
    reader, writer = await connect(port)
    writer.write(b"hi\n")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readexactly(3) == b"HI\n"
        result = await server.shutdown(timeout=0.2)
        assert await reader.read() == b""
    writer.close()
    assert (result.drained, result.closed) == (0, 1)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(HOST, port)


async def test_handle_line_exception_is_logged_and_closes_only_that_client(
    start: Start,
) -> None:
    class Fragile(Upper):
        async def handle_line(self, conn: LineConnection, line: bytes) -> bytes:
            if line == b"crash":
                raise RuntimeError("bug in handler")
            return line.upper()

    port = await start(Fragile())
    reader, writer = await connect(port)
    with ExpectLog("tornado.application", r"Uncaught exception serving 127\.0\.0\.1"):
        writer.write(b"crash\n")
        assert await wait_closed_by_server(reader) == b""
    writer.close()
    assert await roundtrip(port, b"fine\n") == b"FINE\n"


def test_bad_configuration_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="on_long_line must be one of"):
        Upper(on_long_line="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delimiter"):
        Upper(delimiter=b"")
    with pytest.raises(ValueError, match="max_line_length"):
        Upper(max_line_length=0)


def _shared_state_example() -> str:
    """The code of `LineServer`'s "State shared by every connection" example."""
    doc = inspect.getdoc(LineServer) or ""
    after = doc.split("State shared by every connection", 1)[1]
    block = after.split("::\n", 1)[1].split(".. versionadded::", 1)[0]
    return textwrap.dedent(block)


async def test_the_documented_shared_state_is_shared_by_every_connection(
    start: Start,
) -> None:
    code = _shared_state_example()
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    # The README shows the same class.
    cls = code[code.index("class Counter") : code.index("tornado_echo.run")].strip()
    assert cls in readme
    namespace: dict[str, Any] = {}
    # Our own docstring, run as a reader would paste it (without run()).
    exec(code.replace("tornado_echo.run(server=Counter)", ""), namespace)  # noqa: S102
    port = await start(namespace["Counter"]())
    (r1, w1), (r2, w2) = await connect(port), await connect(port)
    try:
        for reader, writer, expected in ((r1, w1, 1), (r2, w2, 2), (r1, w1, 3)):
            writer.write(b"x\n")
            reply = await asyncio.wait_for(reader.readline(), TIMEOUT)
            assert reply == f"{expected} lines so far\n".encode()
    finally:
        w1.close()
        w2.close()


# --- replies to the lines of one read: one write, in order, nothing lost ----


class _CountsWrites(Upper):
    """Upper, counting the writes each connection makes."""

    writes: list[int]

    async def on_connect(self, conn: LineConnection) -> None:
        stream_write = conn.stream.write
        self.writes = [0]

        def counting(data: Any) -> Any:
            self.writes[0] += 1
            return stream_write(data)

        conn.stream.write = counting  # type: ignore[method-assign]


async def test_the_replies_to_the_lines_of_one_read_go_out_in_one_write(
    start: Start,
) -> None:
    server = _CountsWrites()
    port = await start(server)
    lines = b"".join(b"line %d\n" % i for i in range(100))
    assert await roundtrip(port, lines) == lines.upper()
    # 700 bytes in one send are one read (two at most, split by the kernel).
    assert 1 <= server.writes[0] <= 2, server.writes


class _Mixed(LineServer):
    """Replies both ways: returned, and sent from inside the handler."""

    async def handle_line(self, conn: LineConnection, line: bytes) -> bytes | None:
        if line.startswith(b"twice "):
            await conn.send_line(line[6:])
            return line[6:]
        if line == b"nothing":
            return None
        return line


async def test_replies_sent_from_a_handler_keep_their_place(start: Start) -> None:
    port = await start(_Mixed())
    sent = b"a\ntwice b\nnothing\nc\ntwice d\n"
    assert await roundtrip(port, sent) == b"a\nb\nb\nc\nd\nd\n"


class _Waits(LineServer):
    """``slow`` waits until the test lets it go; the others answer at once."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()

    async def handle_line(self, conn: LineConnection, line: bytes) -> bytes:
        if line == b"slow":
            await self.go.wait()
        return line.upper()


async def test_a_handler_that_waits_does_not_hold_back_earlier_replies(
    start: Start,
) -> None:
    server = _Waits()
    port = await start(server)
    reader, writer = await connect(port)
    try:
        writer.write(b"fast\nslow\nafter\n")
        # Answered while the next line's handler still waits.
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"FAST\n"
        server.go.set()
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"SLOW\n"
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"AFTER\n"
    finally:
        writer.close()


class _Fails(LineServer):
    """``boom`` raises, ``quit`` closes; the lines before them are answered."""

    async def handle_line(self, conn: LineConnection, line: bytes) -> bytes:
        if line == b"boom":
            raise RuntimeError("boom")
        if line == b"quit":
            conn.close()
        return line.upper()


@pytest.mark.parametrize("last", [b"boom", b"quit"])
async def test_earlier_replies_go_out_when_a_later_line_ends_the_connection(
    start: Start, last: bytes
) -> None:
    port = await start(_Fails())
    reader, writer = await connect(port)
    try:
        writer.write(b"one\ntwo\n" + last + b"\nnever\n")
        with ExpectLog("tornado.application", "Uncaught exception", required=False):
            received = await wait_closed_by_server(reader)
    finally:
        writer.close()
    assert received == b"ONE\nTWO\n"
