"""tornado_echo.testing and the pytest plugin, as a user would use them.

The two ``test_upper`` tests are the README's "Testing your protocol"
examples inside this suite; ``test_pytest_docs.py`` runs the README's and
the quick start's copies verbatim, in a project of their own.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import unittest
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from _pytest_project import NEEDS_PYTEST_ASYNCIO, run_pytest, without_pytest_asyncio
from tornado.testing import gen_test

from tornado_echo import EchoServer, LineConnection, LineServer
from tornado_echo.testing import LineClient, ServerTestCase

# --- README example: Tornado style -------------------------------------------


class Upper(LineServer):
    async def handle_line(self, conn: LineConnection, line: bytes) -> bytes:
        return line.upper()


class UpperTest(ServerTestCase):
    def get_server(self) -> Upper:
        return Upper()

    @gen_test
    async def test_upper(self) -> None:
        client = await self.connect()
        await client.send_line("hello")
        self.assertEqual(await client.read_line(), b"HELLO")


# --- README example: pytest style --------------------------------------------


@pytest.fixture
def tcp_server() -> type[Upper]:
    return Upper


async def test_upper(tcp_client: LineClient) -> None:
    await tcp_client.send_line("hello")
    assert await tcp_client.read_line() == b"HELLO"


# --- the helpers' guarantees -------------------------------------------------


class Silent(LineServer):
    async def handle_line(self, conn: LineConnection, line: bytes) -> None:
        return None


class Leaky(EchoServer):
    """Never reads, so it never notices that its client left."""

    async def serve_stream(self, stream: object, address: object) -> None:
        await asyncio.Event().wait()


async def test_reads_time_out_instead_of_hanging(
    start_tcp_server, open_tcp_client
) -> None:  # type: ignore[no-untyped-def]
    address = await start_tcp_server(Silent)
    client = await open_tcp_client(address, timeout=0.2)
    await client.send_line("anyone there?")
    async with asyncio.timeout(5):
        with pytest.raises(TimeoutError, match=r"waited 0\.2s for a line"):
            await client.read_line()
    # An abandoned read leaves an IOStream unusable, so the client closed.
    assert client.closed


async def test_factory_fixtures_start_several_servers(
    start_tcp_server, open_tcp_client
) -> None:  # type: ignore[no-untyped-def]
    upper = await start_tcp_server(Upper)
    crlf = await start_tcp_server(lambda: Upper(delimiter=b"\r\n"))
    assert upper.port != crlf.port
    a = await open_tcp_client(upper)
    b = await open_tcp_client(crlf, delimiter=b"\r\n")
    await a.send_line("a")
    await b.send_line("b")
    assert (await a.read_line(), await b.read_line()) == (b"A", b"B")


def crlf_upper() -> Upper:
    return Upper(delimiter=b"\r\n")


class TestClientForACrlfProtocol:
    @pytest.fixture
    def tcp_server(self) -> Callable[[], Upper]:
        return crlf_upper

    @pytest.fixture
    def tcp_client_options(self) -> dict[str, Any]:
        return {"delimiter": b"\r\n", "timeout": 2.0}

    async def test_tcp_client_options_set_the_tcp_clients_delimiter(
        self, tcp_client: LineClient
    ) -> None:
        assert (tcp_client.delimiter, tcp_client.timeout) == (b"\r\n", 2.0)
        await tcp_client.send_line("hello")
        assert await tcp_client.read_line() == b"HELLO"


class TestMisspeltClientOption:
    @pytest.fixture
    def tcp_client_options(self) -> dict[str, Any]:
        return {"delimeter": b"\r\n"}

    def test_a_misspelt_tcp_client_option_is_a_type_error(
        self, request: pytest.FixtureRequest
    ) -> None:
        with pytest.raises(TypeError, match="delimeter"):
            request.getfixturevalue("tcp_client")


async def test_a_line_read_that_times_out_names_the_delimiter_it_waited_for(
    start_tcp_server, open_tcp_client
) -> None:  # type: ignore[no-untyped-def]
    # The mistake this message is for: a CRLF server and a client left at
    # "\n" each wait for the other's line ending, so the server looks silent.
    address = await start_tcp_server(crlf_upper)
    client = await open_tcp_client(address, timeout=0.2)
    await client.send_line("hello")
    async with asyncio.timeout(5):
        with pytest.raises(TimeoutError) as timed_out:
            await client.read_line()
    message = str(timed_out.value)
    assert "waited 0.2s for a line ending in b'\\n' from the server" in message
    assert "tcp_client_options or ServerTestCase.delimiter" in message


def test_server_test_case_fails_a_test_whose_server_leaked() -> None:
    class LeakyTest(ServerTestCase):
        leak_timeout = 0.2

        def get_server(self) -> Leaky:
            return Leaky()

        @gen_test
        async def test_connects(self) -> None:
            await self.connect()

    result = unittest.TestResult()
    LeakyTest("test_connects").run(result)
    # A leak is a failed assertion, reported with what went wrong.
    assert len(result.failures) == 1, result.errors
    assert (
        "1 server connection(s) still open 0.2s after every test client closed"
        in result.failures[0][1]
    )


def test_server_test_case_passes_when_the_server_closes_its_side() -> None:
    class EchoTest(ServerTestCase):
        def get_server(self) -> EchoServer:
            return EchoServer()

        @gen_test
        async def test_echo(self) -> None:
            client = await self.connect()
            await client.send(b"abc")
            self.assertEqual(await client.read_exactly(3), b"abc")

    result = unittest.TestResult()
    EchoTest("test_echo").run(result)
    assert result.wasSuccessful(), result.errors + result.failures


# --- the plugin in a project of its own --------------------------------------

PROJECT_INI = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""

PROJECT_TESTS = """\
import asyncio

import pytest

from tornado_echo import EchoServer


class Leaky(EchoServer):
    async def serve_stream(self, stream, address):
        await asyncio.Event().wait()


async def test_echo(tcp_client):
    await tcp_client.send(b"ping")
    assert await tcp_client.read_exactly(4) == b"ping"


async def test_leak(start_tcp_server, open_tcp_client):
    await open_tcp_client(await start_tcp_server(Leaky))
"""


def test_plugin_is_registered_under_the_pytest11_entry_point() -> None:
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("tornado_echo") == "tornado_echo.pytest_plugin"


def test_plugin_loads_in_a_fresh_project_and_reports_leaks(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(PROJECT_INI)
    (tmp_path / "test_project.py").write_text(PROJECT_TESTS)
    run = run_pytest(tmp_path, "-q")
    assert "2 passed, 1 error" in run.stdout, run.stdout + run.stderr
    assert "ERROR at teardown of test_leak" in run.stdout
    assert "server connection(s) still open" in run.stdout
    # Without the entry point the fixtures do not exist: it is what loads them.
    run = run_pytest(tmp_path, "-q", "-p", "no:tornado_echo")
    assert "fixture 'tcp_client' not found" in run.stdout, run.stdout


NEEDS_ASYNCIO_TESTS = """\
async def test_tcp_address(tcp_address):
    pass


async def test_tcp_client(tcp_client):
    pass


async def test_start_tcp_server(start_tcp_server):
    pass


async def test_open_tcp_client(open_tcp_client):
    pass
"""


def test_without_pytest_asyncio_the_fixtures_fail_saying_that_they_need_it(
    tmp_path: Path,
) -> None:
    pythonpath, extra = without_pytest_asyncio(tmp_path / "site")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_needs_asyncio.py").write_text(NEEDS_ASYNCIO_TESTS)
    run = run_pytest(project, *extra, pythonpath=pythonpath)
    assert "4 errors" in run.stdout, run.stdout + run.stderr
    for name in ("tcp_address", "tcp_client", "start_tcp_server", "open_tcp_client"):
        assert f"ERROR at setup of test_{name} " in run.stdout
    # One line per test, without a traceback.
    assert run.stdout.count(f"\n{NEEDS_PYTEST_ASYNCIO}\n") == 4, run.stdout
    assert "not found" not in run.stdout


#: Prints whether the plugin found pytest-asyncio, and which of Tornado's and
#: tornado_echo's modules importing it loaded.
IMPORT_PLUGIN = (
    "import sys, tornado_echo.pytest_plugin as plugin\n"
    "loaded = [m for m in sys.modules if m.partition('.')[0].startswith('tornado')]\n"
    "print(plugin._async_fixture is not None, sorted(loaded))\n"
)


@pytest.mark.parametrize("asyncio", [True, False], ids=["with", "without"])
def test_importing_the_plugin_imports_nothing_heavy(
    tmp_path: Path, asyncio: bool
) -> None:
    # pytest imports the plugin in every run of every project that has
    # tornado_echo installed, so it must not pull in Tornado or the servers.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if not asyncio:
        env["PYTHONPATH"] = str(without_pytest_asyncio(tmp_path / "site")[0])
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_PLUGIN],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert run.stdout == f"{asyncio} ['tornado_echo', 'tornado_echo.pytest_plugin']\n"


@pytest.mark.parametrize("asyncio", [True, False], ids=["with", "without"])
def test_plugin_does_not_disturb_a_project_that_never_uses_it(
    tmp_path: Path, asyncio: bool
) -> None:
    pythonpath, extra = (
        (None, []) if asyncio else without_pytest_asyncio(tmp_path / "site")
    )
    project = tmp_path / "project"
    project.mkdir()
    ini = "asyncio_default_fixture_loop_scope = function\n" if asyncio else ""
    (project / "pytest.ini").write_text("[pytest]\n" + ini)
    (project / "test_plain.py").write_text("def test_plain():\n    assert 1 + 1 == 2\n")
    run = run_pytest(project, "-q", *extra, pythonpath=pythonpath)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
