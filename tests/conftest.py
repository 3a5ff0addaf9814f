"""Fixtures shared by the behavioural tests: both echo implementations.

The servers are started with tornado_echo's own pytest plugin
(``start_tcp_server``), so its teardown also checks, for every test, that
the server closed each connection whose client went away.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import pytest_asyncio

from tornado_echo import LineConnection, LineServer
from tornado_echo.compat import RawEchoServer
from tornado_echo.loops import loop_factory
from tornado_echo.server import EchoServer
from tornado_echo.testing import ServerAddress

EchoImpl = EchoServer | RawEchoServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py``; examples/ is not a package."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


IMPLS: dict[str, Callable[[], EchoImpl]] = {
    "stream": EchoServer,
    "compat": RawEchoServer,
}

StartServer = Callable[..., Awaitable[ServerAddress]]


@pytest.fixture(params=sorted(IMPLS))
def impl(request: pytest.FixtureRequest) -> str:
    """The name of the echo implementation under test."""
    return str(request.param)


Start = Callable[[Any], Awaitable[int]]


class LineEchoServer(LineServer):
    """A `.LineServer` that echoes each line: the line-protocol server in
    tests that run on every kind of server."""

    async def handle_line(self, conn: LineConnection, line: bytes) -> bytes:
        return line


#: Every server class the operational tests run on.
SERVER_CLASSES: dict[str, Callable[..., Any]] = {
    "stream": EchoServer,
    "compat": RawEchoServer,
    "lineserver": LineEchoServer,
}


@pytest.fixture(params=sorted(SERVER_CLASSES))
def make(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Each server class in turn: `.EchoServer`, `.RawEchoServer` and a
    `.LineServer` subclass; call it with keyword arguments to build one."""
    return SERVER_CLASSES[str(request.param)]


@pytest_asyncio.fixture
async def start(start_tcp_server: StartServer) -> Start:
    """``await start(server)``: serve on a loopback port, return the port."""

    async def start(server: Any) -> int:
        return (await start_tcp_server(server)).port

    return start


@pytest_asyncio.fixture
async def echo(impl: str, start_tcp_server: StartServer) -> tuple[EchoImpl, int]:
    """A running echo server of each implementation and its loopback port."""
    server = IMPLS[impl]()
    address = await start_tcp_server(server)
    return server, address.port


if os.environ.get("TORNADO_ECHO_TEST_LOOP") == "uvloop":
    # ``.ci/run`` runs the behavioural tests a second time this way, so both
    # servers are also checked on the loop ``--loop uvloop`` selects.
    _uvloop = loop_factory("uvloop")

    @pytest.hookimpl(optionalhook=True)
    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
        """Run every async test on uvloop."""
        assert _uvloop is not None
        return {"uvloop": _uvloop}
