"""The scripts in ``examples/`` run, echo, and stop cleanly as documented.

Each takes ``--port``, and a port it cannot use (taken, or not a port) is one
line on stderr, never a traceback.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from _proc import (
    PYTHON,
    ServerProcess,
    connect,
    echo_once,
    exchange,
    run,
    running_server,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: Every example that listens; each has its own tests of what it serves.
SERVERS = [
    "chat_server.py",
    "echo_server.py",
    "kv_server.py",
    "raw_fd_echo.py",
    "uppercase_server.py",
]
EVERY_EXAMPLE = [*SERVERS, "echo_client.py"]

#: How long an example may take to start, fail and exit on a loaded machine.
EXIT_TIMEOUT = 20.0


def example(name: str, *args: str) -> list[str]:
    """The command that runs ``examples/NAME`` with ``args``."""
    return [*PYTHON, str(EXAMPLES / name), *args]


def assert_clean_exit(server: ServerProcess, sig: signal.Signals) -> str:
    """Signal ``server``, check it exits 0 without a traceback; return stderr."""
    assert server.stop(sig) == 0
    stderr = server.stderr()
    assert "shutting down" in stderr
    assert "Traceback" not in stderr
    return stderr


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Check ``result`` exited 1 with one line on stderr, no traceback; return it."""
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    # A traceback, or an OSError's "[Errno 98] ..." leaking into the text.
    assert "Traceback" not in lines[0]
    assert "[Errno" not in lines[0]
    return lines[0]


def test_every_example_script_is_covered_here() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EVERY_EXAMPLE)


@pytest.mark.parametrize("name", EVERY_EXAMPLE)
def test_every_example_takes_a_port_option(name: str) -> None:
    result = run(example(name, "--help"), EXIT_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert "--port PORT" in result.stdout


@pytest.mark.parametrize("name", SERVERS)
def test_server_on_a_port_in_use_says_so_in_one_line_and_exits_1(name: str) -> None:
    # Taken as a user meets it: another server is listening there.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(example(name, "--port", str(port)), EXIT_TIMEOUT)
    line = assert_one_line_error(result)
    in_use = os.strerror(errno.EADDRINUSE)
    assert line == f"{name}: cannot listen on 127.0.0.1:{port}: {in_use}"


@pytest.mark.parametrize("name", EVERY_EXAMPLE)
def test_port_out_of_range_is_one_line_and_exit_1(name: str) -> None:
    # Not wrapped round to 70000 - 65536 = 4464 and used, as getaddrinfo would.
    line = assert_one_line_error(run(example(name, "--port", "70000"), EXIT_TIMEOUT))
    assert line.startswith(f"{name}: port must be ")
    assert line.endswith("65535, not 70000")


@pytest.mark.parametrize("name", EVERY_EXAMPLE)
def test_port_that_is_not_a_number_is_a_usage_error(name: str) -> None:
    result = run(example(name, "--port", "abc"), EXIT_TIMEOUT)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last == f"{name}: error: argument --port: invalid int value: 'abc'"


def test_echo_client_defaults_to_the_echo_servers_address() -> None:
    client = run(example("echo_client.py", "--help"), EXIT_TIMEOUT).stdout
    server = run(example("echo_server.py", "--help"), EXIT_TIMEOUT).stdout
    assert "--host HOST" in client
    assert "(default: 127.0.0.1)" in client
    assert "(default: 10000)" in client
    assert "(default: 10000)" in server


def test_echo_client_prints_the_echo_from_echo_server() -> None:
    with running_server(example("echo_server.py", "--port", "0")) as (server, port):
        argv = ["--host", "127.0.0.1", "--port", str(port), "hi from a test"]
        result = run(example("echo_client.py", *argv))
        assert result.returncode == 0, result.stderr
        assert result.stdout == "hi from a test\n"
        assert_clean_exit(server, signal.SIGTERM)


def test_echo_client_default_message() -> None:
    with running_server(example("echo_server.py", "--port", "0")) as (server, port):
        # --host left out: the client's default is the server's.
        result = run(example("echo_client.py", "--port", str(port)))
        assert result.returncode == 0, result.stderr
        assert result.stdout == "hello, echo\n"
        assert_clean_exit(server, signal.SIGINT)


def test_echo_client_cannot_connect_is_one_line_and_exit_1() -> None:
    # A bound socket that is not listening refuses connections, and keeps
    # the port from being reused by anything else while the test runs.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        result = run(example("echo_client.py", "--port", str(port)))
    line = assert_one_line_error(result)
    assert line.startswith(f"echo_client.py: cannot connect to 127.0.0.1:{port}: ")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_raw_fd_echo_echoes_and_exits_0_on_signal(sig: signal.Signals) -> None:
    with running_server(example("raw_fd_echo.py", "--port", "0")) as (server, port):
        payload = b"raw fd\n" * 20000  # ~140 KB: several reads and partial sends
        assert echo_once(port, payload) == payload
        assert_clean_exit(server, sig)


def test_raw_fd_echo_closes_open_connection_at_shutdown_deadline() -> None:
    command = example("raw_fd_echo.py", "--port", "0", "--shutdown-timeout", "0.2")
    with running_server(command) as (server, port), connect(port) as client:
        assert exchange(client, b"open\n") == b"open\n"
        stderr = assert_clean_exit(server, signal.SIGTERM)
        try:
            assert client.recv(1024) == b""
        except ConnectionResetError:
            pass  # closed with a reset: closed all the same
    assert "0 drained, 1 closed" in stderr
