"""pytest fixtures for testing a tornado_echo server, or any `.TCPServer`.

Loaded automatically (through the ``pytest11`` entry point) when
tornado_echo is installed. The fixtures run in the test's event loop and
need pytest-asyncio; without it, a test that asks for one fails saying so.
This module imports nothing heavy and changes no configuration, so
projects that do not use the fixtures are unaffected.

pytest-asyncio starts in strict mode, where an ``async def`` test fails
with "async def functions are not natively supported". Either set its
auto mode, as the examples here assume (the second line silences its
warning about an unset fixture loop scope), in ``pyproject.toml``:

.. code-block:: toml

    [tool.pytest.ini_options]
    asyncio_mode = "auto"
    asyncio_default_fixture_loop_scope = "function"

or, in strict mode, mark each async test ``@pytest.mark.asyncio`` and
declare your own async fixtures with ``@pytest_asyncio.fixture``.

Override ``tcp_server`` to choose what runs (default: `.EchoServer`)::

    import pytest

    @pytest.fixture
    def tcp_server():
        return Upper          # a class or factory, created inside the loop

    async def test_upper(tcp_client):
        await tcp_client.send_line("hi")
        assert await tcp_client.read_line() == b"HI"

``tcp_client`` ends its lines with ``b"\\n"``. For a protocol with another
delimiter, override ``tcp_client_options``, the keywords its
`.LineClient.connect` is called with::

    @pytest.fixture
    def tcp_client_options():
        return {"delimiter": b"\\r\\n"}

``tcp_address`` is where it listens; ``start_tcp_server(server)`` and
``open_tcp_client(address, **options)`` start more servers and clients.
Teardown closes every client, fails the test if a server kept a connection
open after its clients were gone, and shuts every server down, even when
the test failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

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
        """The `.ServerAddress` of ``tcp_server``, started on an unused loopback port."""
        return await _tornado_echo_registry.start(tcp_server)

    @_async_fixture
    async def tcp_client(
        _tornado_echo_registry: _Registry,
        tcp_address: ServerAddress,
        tcp_client_options: Mapping[str, Any],
    ) -> LineClient:
        """A `.LineClient` connected to ``tcp_address``, made with ``tcp_client_options``."""
        return await _tornado_echo_registry.connect(tcp_address, **tcp_client_options)

else:  # pragma: no cover - tested in a subprocess
    # Without these, a test that asks for tcp_client fails with "fixture
    # 'tcp_client' not found", which does not say what is missing.
    def _need_pytest_asyncio() -> NoReturn:
        pytest.fail(
            "tornado_echo's tcp_address, tcp_client, start_tcp_server and "
            "open_tcp_client fixtures need pytest-asyncio, which is not "
            "installed: pip install pytest-asyncio",
            pytrace=False,
        )

    @pytest.fixture
    def _tornado_echo_registry() -> _Registry:
        _need_pytest_asyncio()

    @pytest.fixture
    def tcp_address() -> ServerAddress:
        """Needs pytest-asyncio."""
        _need_pytest_asyncio()

    @pytest.fixture
    def tcp_client() -> LineClient:
        """Needs pytest-asyncio."""
        _need_pytest_asyncio()


@pytest.fixture
def tcp_server() -> ListenerSpec:
    """What ``tcp_address`` runs (a server class, factory or instance); override it.

    Default: `.EchoServer`.
    """
    from tornado_echo.server import EchoServer

    return EchoServer


@pytest.fixture
def tcp_client_options() -> Mapping[str, Any]:
    """The keywords ``tcp_client`` passes to `.LineClient.connect`; override it.

    The default is none: ``delimiter=b"\\n"``, ``timeout=5``, UTF-8. A
    misspelt keyword is a `TypeError` when ``tcp_client`` connects.

    .. versionadded:: 0.3.0
    """
    return {}


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
