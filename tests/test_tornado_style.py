"""The same guarantees, written with Tornado's own `tornado.testing` tools.

This is the style Tornado tests itself in: an `AsyncTestCase` (here our
`ServerTestCase`, which starts the server and checks for leaked connections)
with `gen_test` and `ExpectLog`, and one abstract base run over both
implementations by subclassing. `BareTornadoTest` at the end uses nothing
but `tornado.testing`, to show that works too.
"""

from __future__ import annotations

import asyncio
import logging
from unittest import mock

from tornado.tcpclient import TCPClient
from tornado.testing import AsyncTestCase, ExpectLog, bind_unused_port, gen_test

from tornado_echo import LineConnection, LineServer
from tornado_echo.compat import RawEchoServer, _RawConnection
from tornado_echo.server import EchoServer
from tornado_echo.testing import ServerTestCase


class _EchoTests(ServerTestCase):
    __test__ = False  # abstract: the subclasses below pick the implementation
    #: The method a test replaces to make the connection handler fail.
    handler_hook: tuple[type, str]

    @gen_test
    async def test_echoes_a_message(self) -> None:
        client = await self.connect()
        await client.send_line("ping")
        self.assertEqual(await client.read_line(), b"ping")

    @gen_test
    async def test_half_close_with_unterminated_tail(self) -> None:
        client = await self.connect()
        await client.send(b"one\ntwo\nunterminated tail")
        client.shutdown_write()
        self.assertEqual(
            await client.read_until_close(), b"one\ntwo\nunterminated tail"
        )

    @gen_test
    async def test_shutdown_reports_drained_and_closed(self) -> None:
        client = await self.connect()
        await client.send(b"x")
        await client.read_exactly(1)
        self.assertEqual(self.server.connection_count, 1)
        result = await self.server.shutdown(timeout=0.1)
        self.assertEqual((result.drained, result.closed), (0, 1))
        self.assertEqual(await client.read_until_close(), b"")

    @gen_test
    async def test_handler_exception_is_logged_with_peer_address(self) -> None:
        def explode(*args: object) -> None:
            raise ValueError("handler bug")

        with (
            mock.patch.object(*self.handler_hook, explode),
            ExpectLog("tornado.application", r"Uncaught exception serving 127\."),
        ):
            client = await self.connect()
            await client.send(b"trigger")
            self.assertEqual(await client.read_until_close(), b"")
            while self.server.connection_count:
                await asyncio.sleep(0.01)


class StreamEchoTest(_EchoTests):
    __test__ = True
    handler_hook = (EchoServer, "serve_stream")

    def get_server(self) -> EchoServer:
        return EchoServer()


class CompatEchoTest(_EchoTests):
    __test__ = True
    handler_hook = (_RawConnection, "_on_readable")

    def get_server(self) -> RawEchoServer:
        return RawEchoServer()


class BareTornadoTest(AsyncTestCase):
    """Only `tornado.testing`: the server is made and cleaned up by hand."""

    @gen_test
    async def test_echo_with_bind_unused_port(self) -> None:
        server = EchoServer()  # inside the loop that gen_test runs
        sock, port = bind_unused_port()
        server.add_sockets([sock])
        stream = await TCPClient().connect("127.0.0.1", port)
        try:
            await stream.write(b"bare\n")
            self.assertEqual(await stream.read_until(b"\n"), b"bare\n")
        finally:
            stream.close()
            await server.shutdown(timeout=1)


class _Upper(LineServer):
    max_line_length = 16

    async def handle_line(self, conn: LineConnection, line: bytes) -> bytes:
        return line.upper()

    async def handle_eof(self, conn: LineConnection, tail: bytes) -> None:
        await conn.send_line(b"tail=" + tail)


class LineServerTornadoTest(ServerTestCase):
    """LineServer in the AsyncTestCase style."""

    def get_server(self) -> LineServer:
        return _Upper(on_long_line="reply")

    @gen_test
    async def test_1000_pipelined_lines_answered_in_order(self) -> None:
        client = await self.connect()
        await client.send(b"".join(b"line %d\n" % i for i in range(1000)))
        for i in range(1000):
            self.assertEqual(await client.read_line(), b"LINE %d" % i)

    @gen_test
    async def test_reply_policy_then_carries_on(self) -> None:
        client = await self.connect()
        with ExpectLog(
            "tornado_echo.lines", r".*line longer than 16", level=logging.INFO
        ):
            await client.send(b"a\n" + b"z" * 17 + b"\nb\n")
            self.assertEqual(await client.read_line(), b"A")
            self.assertEqual(await client.read_line(), b"ERROR line too long")
            self.assertEqual(await client.read_line(), b"B")

    @gen_test
    async def test_half_close_answers_lines_then_the_tail(self) -> None:
        client = await self.connect()
        await client.send(b"x\ny\nrest")
        client.shutdown_write()
        self.assertEqual(await client.read_until_close(), b"X\nY\ntail=rest\n")
