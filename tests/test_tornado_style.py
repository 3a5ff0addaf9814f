"""The same guarantees, written with Tornado's own `tornado.testing` tools.

This is the style Tornado tests itself in: `AsyncTestCase` with `gen_test`,
`bind_unused_port`, `ExpectLog`, and one abstract base run over both
implementations by subclassing.
"""

from __future__ import annotations

import asyncio
import socket
from unittest import mock

from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient
from tornado.testing import AsyncTestCase, ExpectLog, bind_unused_port, gen_test

from tornado_echo.compat import RawEchoServer, _RawConnection
from tornado_echo.server import EchoServer


class _EchoTests(AsyncTestCase):
    __test__ = False  # abstract: the subclasses below pick the implementation
    #: The method a test replaces to make the connection handler fail.
    handler_hook: tuple[type, str]

    def make_server(self) -> EchoServer | RawEchoServer:
        raise NotImplementedError

    def setUp(self) -> None:
        super().setUp()
        # Created here, where AsyncTestCase has made the loop current.
        self.server = self.make_server()
        sock, self.port = bind_unused_port()
        self.server.add_sockets([sock])
        self.client = TCPClient()

    def tearDown(self) -> None:
        self.io_loop.run_sync(lambda: self.server.shutdown(timeout=0))
        self.client.close()
        super().tearDown()

    async def connect(self) -> IOStream:
        return await self.client.connect("127.0.0.1", self.port)

    @gen_test
    async def test_echoes_a_message(self) -> None:
        stream = await self.connect()
        await stream.write(b"ping\n")
        self.assertEqual(await stream.read_until(b"\n"), b"ping\n")
        stream.close()

    @gen_test
    async def test_half_close_with_unterminated_tail(self) -> None:
        stream = await self.connect()
        await stream.write(b"one\ntwo\nunterminated tail")
        stream.socket.shutdown(socket.SHUT_WR)
        self.assertEqual(
            await stream.read_until_close(), b"one\ntwo\nunterminated tail"
        )

    @gen_test
    async def test_shutdown_reports_drained_and_closed(self) -> None:
        stream = await self.connect()
        await stream.write(b"x")
        await stream.read_bytes(1)
        self.assertEqual(self.server.connection_count, 1)
        result = await self.server.shutdown(timeout=0.1)
        self.assertEqual((result.drained, result.closed), (0, 1))
        self.assertEqual(await stream.read_until_close(), b"")

    @gen_test
    async def test_handler_exception_is_logged_with_peer_address(self) -> None:
        def explode(*args: object) -> None:
            raise ValueError("handler bug")

        with (
            mock.patch.object(*self.handler_hook, explode),
            ExpectLog("tornado.application", r"Uncaught exception serving 127\."),
        ):
            stream = await self.connect()
            await stream.write(b"trigger")
            try:
                self.assertEqual(await stream.read_until_close(), b"")
            except StreamClosedError:
                pass  # unread input turns the close into a reset: also closed
            while self.server.connection_count:
                await asyncio.sleep(0.01)


class StreamEchoTest(_EchoTests):
    __test__ = True
    handler_hook = (EchoServer, "serve_stream")

    def make_server(self) -> EchoServer:
        return EchoServer()


class CompatEchoTest(_EchoTests):
    __test__ = True
    handler_hook = (_RawConnection, "_on_readable")

    def make_server(self) -> RawEchoServer:
        return RawEchoServer()
