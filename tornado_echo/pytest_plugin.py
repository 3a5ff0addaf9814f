"""pytest fixtures for testing a tornado_echo server, or any `.TCPServer`.

Loaded automatically (through the ``pytest11`` entry point) when
tornado_echo is installed. The fixtures need pytest-asyncio and run in the
test's event loop; this module imports nothing heavy and changes no
configuration, so projects that do not use the fixtures are unaffected.

Override ``tcp_server`` to choose what runs (default: `.EchoServer`)::

    import pytest

    @pytest.fixture
    def tcp_server():
        return Upper          # a class or factory, created inside the loop

    async def test_upper(tcp_client):
        await tcp_client.send_line("hi")
        assert await tcp_client.read_line() == b"HI"

``tcp_address`` is where it listens; ``start_tcp_server(server)`` and
``open_tcp_client(address, **options)`` start more servers and clients.
Teardown closes every client, fails the test if a server kept a connection
open after its clients were gone, and shuts every server down, even when
the test failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tornado_echo.runner import Listener, ListenerSpec
    from tornado_echo.testing import LineClient, ServerAddress

try:
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - a project without pytest-asyncio
    _async_fixture = None  # type: ignore[assignment]


class _Registry:
    """What one test started, so teardown can close it all in order."""

    def __init__(self) -> None:
        self.servers: list[Listener] = []
        self.clients: list[LineClient] = []

    async def start(
        self, server: ListenerSpec, host: str = "127.0.0.1"
    ) -> ServerAddress:
        from tornado_echo.testing import start_server

        instance, address = await start_server(server, host)
        self.servers.append(instance)
        return address

    async def connect(self, address: ServerAddress, **options: Any) -> LineClient:
        from tornado_echo.testing import LineClient

        client = await LineClient.connect(address.host, address.port, **options)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        from tornado_echo.testing import stop_server

        errors: list[BaseException] = []
        for server in self.servers:
            try:
                await stop_server(server, self.clients)
            except AssertionError as exc:
                errors.append(exc)
        for client in self.clients:
            client.close()
        if errors:
            pytest.fail(str(errors[0]), pytrace=False)


if _async_fixture is not None:

    @_async_fixture
    async def _tornado_echo_registry() -> AsyncIterator[_Registry]:
        registry = _Registry()
        try:
            yield registry
        finally:
            await registry.close()

    @_async_fixture
    async def tcp_address(
        _tornado_echo_registry: _Registry, tcp_server: ListenerSpec
    ) -> ServerAddress:
        """The address of ``tcp_server``, started on an unused loopback port."""
        return await _tornado_echo_registry.start(tcp_server)

    @_async_fixture
    async def tcp_client(
        _tornado_echo_registry: _Registry, tcp_address: ServerAddress
    ) -> LineClient:
        """A `.LineClient` connected to ``tcp_address``."""
        return await _tornado_echo_registry.connect(tcp_address)

else:  # pragma: no cover

    @pytest.fixture
    def _tornado_echo_registry() -> _Registry:
        pytest.fail(
            "tornado_echo's pytest fixtures need pytest-asyncio: "
            "pip install pytest-asyncio",
            pytrace=False,
        )


@pytest.fixture
def tcp_server() -> ListenerSpec:
    """The server ``tcp_address`` runs; override it. Default: `.EchoServer`."""
    from tornado_echo.server import EchoServer

    return EchoServer


@pytest.fixture
def start_tcp_server(
    _tornado_echo_registry: _Registry,
) -> Callable[..., Awaitable[ServerAddress]]:
    """``await start_tcp_server(server, host="127.0.0.1")`` → its `.ServerAddress`."""
    return _tornado_echo_registry.start


@pytest.fixture
def open_tcp_client(
    _tornado_echo_registry: _Registry,
) -> Callable[..., Awaitable[LineClient]]:
    """``await open_tcp_client(address, delimiter=..., timeout=...)`` → `.LineClient`."""
    return _tornado_echo_registry.connect
