"""Fixtures shared by the behavioural tests: both echo implementations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from tornado.testing import bind_unused_port

from tornado_echo.compat import RawEchoServer
from tornado_echo.server import EchoServer

EchoImpl = EchoServer | RawEchoServer

IMPLS: dict[str, Callable[[], EchoImpl]] = {
    "stream": EchoServer,
    "compat": RawEchoServer,
}


@pytest.fixture(params=sorted(IMPLS))
def impl(request: pytest.FixtureRequest) -> str:
    """The name of the echo implementation under test."""
    return str(request.param)


@pytest_asyncio.fixture
async def echo(impl: str) -> AsyncIterator[tuple[EchoImpl, int]]:
    """A running echo server of each implementation and its loopback port."""
    server = IMPLS[impl]()
    sock, port = bind_unused_port()
    server.add_sockets([sock])
    try:
        yield server, port
    finally:
        await server.shutdown(timeout=0)
