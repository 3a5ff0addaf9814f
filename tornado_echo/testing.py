"""Helpers for testing servers built on tornado_echo, or any `.TCPServer`.

Two styles, with the same client:

* `ServerTestCase`, a `tornado.testing.AsyncTestCase` that starts the server
  returned by `ServerTestCase.get_server` on an unused loopback port;
* a pytest plugin (``tornado_echo.pytest_plugin``, loaded automatically when
  tornado_echo is installed) with the fixtures ``tcp_server``,
  ``tcp_address``, ``tcp_client``, ``tcp_client_options``,
  ``start_tcp_server`` and ``open_tcp_client``, for pytest-asyncio tests.

`LineClient` is the client: every read and the connect are bounded by a
timeout, so a test fails instead of hanging, and a read that timed out
closes the client (an `.IOStream` cannot be read again after an abandoned
read).

Teardown closes every client the test opened, then checks that the server
closed its side too: a connection the server still holds after all its
clients are gone has leaked, and the test fails saying so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Awaitable
from typing import Any, TypeVar

from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient
from tornado.testing import AsyncTestCase, bind_unused_port

from tornado_echo.errors import Error
from tornado_echo.runner import Listener, ListenerSpec, instantiate

__all__ = [
    "DEFAULT_TIMEOUT",
    "LEAK_TIMEOUT",
    "LeakedConnectionError",
    "LineClient",
    "ServerAddress",
    "ServerTestCase",
    "start_server",
    "stop_server",
]

#: Seconds any helper waits before giving up; generous for a loaded CI box,
#: short enough that a hang fails fast.
DEFAULT_TIMEOUT = 5.0

#: How long teardown waits for the server to notice that its clients went
#: away before it calls a connection leaked.
LEAK_TIMEOUT = 2.0

_T = TypeVar("_T")


class LeakedConnectionError(Error, AssertionError):
    """The server kept connections open after every client had closed."""


@dataclasses.dataclass(frozen=True, slots=True)
class ServerAddress:
    """Where a test server listens.

    >>> address = ServerAddress("127.0.0.1", 8888)
    >>> str(address), address.port
    ('127.0.0.1:8888', 8888)
    """

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class LineClient:
    """A small test client over an `.IOStream`; every wait has a timeout.

    Create it with `LineClient.connect`. Reads raise `TimeoutError` (and
    close the client) when nothing arrives in time, and
    `.StreamClosedError` when the server has closed the connection.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        stream: IOStream,
        *,
        delimiter: bytes = b"\n",
        timeout: float = DEFAULT_TIMEOUT,
        encoding: str = "utf-8",
    ) -> None:
        self.stream = stream
        self.delimiter = delimiter
        self.timeout = timeout
        self.encoding = encoding

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        delimiter: bytes = b"\n",
        timeout: float = DEFAULT_TIMEOUT,
        encoding: str = "utf-8",
    ) -> LineClient:
        """Connect to ``host:port`` within ``timeout`` seconds."""
        try:
            stream = await TCPClient().connect(host, port, timeout=timeout)
        except TimeoutError:
            raise TimeoutError(
                f"could not connect to {host}:{port} in {timeout}s"
            ) from None
        return cls(stream, delimiter=delimiter, timeout=timeout, encoding=encoding)

    async def send(self, data: bytes) -> None:
        """Send raw bytes, waiting until the kernel has them."""
        await self._bounded(self.stream.write(data), "send")

    async def send_line(self, line: bytes | str) -> None:
        """Send ``line`` followed by the delimiter."""
        if isinstance(line, str):
            line = line.encode(self.encoding)
        await self.send(line + self.delimiter)

    async def read_line(self, max_bytes: int = 1 << 20) -> bytes:
        """Read one line and return it without its delimiter.

        A line longer than ``max_bytes`` closes the client (as
        `.IOStream.read_until` does) and raises `.StreamClosedError`.
        """
        data = await self._bounded(
            self.stream.read_until(self.delimiter, max_bytes=max_bytes),
            f"a line ending in {self.delimiter!r}",
            # To the client, a server that ends its lines with another
            # delimiter looks silent, so say where the delimiter is set.
            hint=" (if the server's lines end otherwise, set the client's "
            "delimiter: tcp_client_options or ServerTestCase.delimiter)",
        )
        return data[: -len(self.delimiter)]

    async def read_exactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes."""
        return await self._bounded(self.stream.read_bytes(n), f"{n} bytes")

    async def read_until_close(self) -> bytes:
        """Read until the server closes the connection; a reset counts as closed."""
        try:
            return await self._bounded(self.stream.read_until_close(), "the close")
        except StreamClosedError:
            return b""

    def shutdown_write(self) -> None:
        """Half-close: send FIN, keep reading (like ``nc -N``)."""
        self.stream.socket.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.stream.close()

    @property
    def closed(self) -> bool:
        """True once the client or the server closed the connection."""
        return self.stream.closed()

    async def _bounded(self, step: Awaitable[_T], what: str, hint: str = "") -> _T:
        try:
            return await asyncio.wait_for(step, self.timeout)
        except TimeoutError:
            # The stream is stuck "already reading" after an abandoned read.
            self.close()
            raise TimeoutError(
                f"waited {self.timeout}s for {what} from the server; "
                f"client closed{hint}"
            ) from None


async def start_server(
    server: ListenerSpec, host: str = "127.0.0.1"
) -> tuple[Listener, ServerAddress]:
    """Listen on an unused port with ``server`` (an instance, class or factory).

    Call it inside the running event loop, where the server is created.
    """
    instance = instantiate(server)
    sock, port = bind_unused_port(address=host)
    instance.add_sockets([sock])
    return instance, ServerAddress(host, port)


async def stop_server(
    server: Listener, clients: list[LineClient], leak_timeout: float = LEAK_TIMEOUT
) -> None:
    """Close ``clients``, check that ``server`` did not leak, and shut it down.

    Raises `LeakedConnectionError` if the server still holds connections
    ``leak_timeout`` seconds after the clients closed.
    """
    for client in clients:
        client.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + leak_timeout
    while _open_connections(server) and loop.time() < deadline:
        await asyncio.sleep(0.01)
    leaked = _open_connections(server)
    shutdown = getattr(server, "shutdown", None)
    if shutdown is not None:
        await shutdown(timeout=0)
    else:
        server.stop()
    if leaked:
        raise LeakedConnectionError(
            f"{leaked} server connection(s) still open {leak_timeout}s after every "
            "test client closed: the server does not close connections whose "
            "client went away"
        )


def _open_connections(server: Listener) -> int:
    # Only servers that track connections (all of tornado_echo's) can leak
    # in a way we can see; a bare TCPServer reports 0.
    count = getattr(server, "connection_count", 0)
    return count if isinstance(count, int) else 0


class ServerTestCase(AsyncTestCase):
    """An `.AsyncTestCase` that runs one server on an unused loopback port.

    Override `get_server` to return the server (any `.TCPServer`, such as an
    `.EchoServer` or a `.LineServer` subclass); it is created inside the
    test's loop. Tests get ``self.server``, ``self.address`` and
    ``self.port``, and open clients with `connect`. ``tearDown`` closes the
    clients, fails the test if the server leaked a connection, and shuts
    the server down.

    ::

        from tornado.testing import gen_test
        from tornado_echo.testing import ServerTestCase

        class UpperTest(ServerTestCase):
            def get_server(self):
                return Upper()

            @gen_test
            async def test_upper(self):
                client = await self.connect()
                await client.send_line("hi")
                self.assertEqual(await client.read_line(), b"HI")

    .. versionadded:: 0.2.0
    """

    #: Passed to every `LineClient` this test case opens.
    delimiter = b"\n"
    client_timeout = DEFAULT_TIMEOUT
    #: See `stop_server`.
    leak_timeout = LEAK_TIMEOUT

    def get_server(self) -> Listener:
        """Return the server to test; called inside the test's event loop."""
        raise NotImplementedError()

    def setUp(self) -> None:
        super().setUp()
        self._clients: list[LineClient] = []
        self.server, self.address = self.io_loop.run_sync(
            lambda: start_server(self.get_server)
        )
        self.port = self.address.port

    def tearDown(self) -> None:
        try:
            self.io_loop.run_sync(
                lambda: stop_server(self.server, self._clients, self.leak_timeout),
                timeout=self.leak_timeout + DEFAULT_TIMEOUT,
            )
        finally:
            super().tearDown()

    async def connect(self, **kwargs: Any) -> LineClient:
        """Open a `LineClient` to the server; closed in ``tearDown``."""
        kwargs.setdefault("delimiter", self.delimiter)
        kwargs.setdefault("timeout", self.client_timeout)
        client = await LineClient.connect(
            self.address.host, self.address.port, **kwargs
        )
        self._clients.append(client)
        return client
