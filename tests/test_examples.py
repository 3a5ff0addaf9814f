"""The scripts in ``examples/`` run, echo, and stop cleanly as documented."""

from __future__ import annotations

import signal
import socket
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


def test_echo_client_prints_the_echo_from_echo_server() -> None:
    with running_server(example("echo_server.py", "--port", "0")) as (server, port):
        result = run(
            example("echo_client.py", "127.0.0.1", str(port), "hi from a test")
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "hi from a test\n"
        assert_clean_exit(server, signal.SIGTERM)


def test_echo_client_default_message() -> None:
    with running_server(example("echo_server.py", "--port", "0")) as (server, port):
        result = run(example("echo_client.py", "127.0.0.1", str(port)))
        assert result.returncode == 0, result.stderr
        assert result.stdout == "hello, echo\n"
        assert_clean_exit(server, signal.SIGINT)


def test_echo_client_cannot_connect_is_one_line_and_exit_1() -> None:
    # A bound socket that is not listening refuses connections, and keeps
    # the port from being reused by anything else while the test runs.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        result = run(example("echo_client.py", "127.0.0.1", str(port)))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot connect to 127.0.0.1:{port}" in lines[0]


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
