"""End-to-end tests of the ``tornado-echo`` command, run as a real subprocess.

Each test starts the CLI (``python -m tornado_echo`` or the installed
``tornado-echo`` script) on a free loopback port, talks to it with plain
sockets and signals it, and bounds every wait so a hung server fails the test
instead of hanging the suite.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
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

from tornado_echo import loops
from tornado_echo.cli import build_parser
from tornado_echo.stats import ServerStats

IMPLS = ["stream", "compat"]


def module_command(*args: str) -> list[str]:
    """``python -m tornado_echo ARGS``."""
    return [*PYTHON, "-m", "tornado_echo", *args]


def script_command(*args: str) -> list[str]:
    """The ``tornado-echo`` console script installed next to the interpreter."""
    script = shutil.which("tornado-echo", path=os.path.dirname(sys.executable))
    assert script is not None, f"no tornado-echo script next to {sys.executable}"
    return [script, *args]


@contextlib.contextmanager
def serving(
    impl: str, *args: str, launcher: str = "module"
) -> Iterator[tuple[ServerProcess, int]]:
    """Start the CLI on a free port with ``--impl impl``; yield it and its port."""
    command = script_command if launcher == "script" else module_command
    with running_server(command("--port", "0", "--impl", impl, *args)) as started:
        yield started


def assert_one_line_error(stderr: str, *needles: str) -> None:
    """``stderr`` is exactly one non-empty line, containing every needle."""
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].strip()
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("launcher", ["module", "script"])
@pytest.mark.parametrize("impl", IMPLS)
def test_serves_echo_and_exits_0_on_sigterm(impl: str, launcher: str) -> None:
    with serving(impl, launcher=launcher) as (server, port):
        payload = bytes(range(256)) * 400  # ~100 KB: more than one read
        assert echo_once(port, payload) == payload
        assert server.stop(signal.SIGTERM) == 0
        stderr = server.stderr()
    assert "shutting down" in stderr
    # The echo connection had ended, so there was nothing left to drain.
    assert "stopped: connections 0 open, 1 total, 0 drained, 0 force-closed" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("impl", IMPLS)
def test_sigint_exits_0_without_traceback(impl: str) -> None:
    with serving(impl) as (server, port):
        # Echoing first proves the loop is running with the signal handlers
        # installed; before that, SIGINT would be a KeyboardInterrupt.
        assert echo_once(port, b"ping\n") == b"ping\n"
        assert server.stop(signal.SIGINT) == 0
        stderr = server.stderr()
    assert "shutting down" in stderr
    assert "Traceback" not in stderr
    assert "KeyboardInterrupt" not in stderr


def _wait_until_refused(port: int, timeout: float) -> None:
    """Fail unless connecting to ``port`` is refused within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connect(port, timeout=1.0).close()
        except ConnectionRefusedError:
            return
        # "shutting down" is logged just before the listener closes.
        assert time.monotonic() < deadline, f"port {port} still accepts connections"
        time.sleep(0.01)


@pytest.mark.parametrize("impl", IMPLS)
def test_sigterm_drains_open_connection_then_closes_it(impl: str) -> None:
    drain = 1.0
    with (
        serving(impl, "--shutdown-timeout", str(drain)) as (server, port),
        connect(port) as client,
    ):
        assert exchange(client, b"before\n") == b"before\n"
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for_line("shutting down")

        # Draining: no new connections, but the open one is still served.
        _wait_until_refused(port, timeout=drain / 2)
        assert exchange(client, b"during\n") == b"during\n"

        # At the deadline the server closes it: EOF, or a reset.
        try:
            rest = client.recv(1024)
        except ConnectionResetError:
            rest = b""
        closed_after = time.monotonic() - signalled
        assert rest == b""
        assert drain * 0.8 <= closed_after < drain + 5.0
        assert server.wait() == 0
        stderr = server.stderr()
    assert re.search(r"stopped: .*\d+ drained, 1 force-closed", stderr), stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--port", "70000"], "--port"),
        (["--port", "abc"], "--port"),
        (["--impl", "nope"], "--impl"),
        (["--shutdown-timeout", "-1"], "--shutdown-timeout"),
        (["--log-level", "loud"], "--log-level"),
        (["--loop", "trio"], "--loop"),
    ],
    ids=[
        "port-too-big",
        "port-not-a-number",
        "unknown-impl",
        "negative-timeout",
        "bad-log-level",
        "unknown-loop",
    ],
)
def test_bad_argument_prints_usage_and_exits_2(args: list[str], option: str) -> None:
    result = run(module_command(*args))
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert f"argument {option}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("impl", IMPLS)
def test_port_in_use_is_one_line_and_exit_1(impl: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(module_command("--port", str(port), "--impl", impl))
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "cannot listen on", f"127.0.0.1:{port}")
    assert result.stdout == ""


@pytest.mark.parametrize(
    "host",
    [
        # TEST-NET-1 (RFC 5737): no local interface has it, so bind fails
        # with EADDRNOTAVAIL; nothing is ever sent there.
        "192.0.2.1",
        # .invalid never resolves (RFC 6761).
        "no-such-host.invalid",
        "a..b",  # getaddrinfo's IDNA step raises UnicodeError, not OSError
    ],
)
def test_unbindable_address_is_one_line_and_exit_1(host: str) -> None:
    result = run(module_command("--host", host, "--port", "0"))
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "cannot listen on", host)


@pytest.mark.parametrize("impl", IMPLS)
def test_serves_on_uvloop(impl: str) -> None:
    pytest.importorskip("uvloop")
    code = (
        "import asyncio, sys\n"
        "from tornado_echo.cli import main\n"
        "from tornado_echo import runner\n"
        "serve = runner.serve\n"
        "async def checked(*args, **kwargs):\n"
        "    print(type(asyncio.get_running_loop()).__module__, file=sys.stderr)\n"
        "    return await serve(*args, **kwargs)\n"
        "runner.serve = checked\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = [*PYTHON, "-c", code, "--port", "0", "--impl", impl, "--loop", "uvloop"]
    with running_server(argv) as (server, port):
        payload = bytes(range(256)) * 400
        assert echo_once(port, payload) == payload
        assert server.stop(signal.SIGTERM) == 0
        stderr = server.stderr()
    assert stderr.splitlines()[0] == "uvloop"
    assert "Traceback" not in stderr


def test_uvloop_asked_for_but_missing_is_one_line_and_exit_1() -> None:
    # sys.modules[name] = None makes "import name" fail, as if not installed.
    code = (
        "import sys\n"
        "sys.modules['uvloop'] = None\n"
        "from tornado_echo.cli import main\n"
        "sys.exit(main(['--port', '0', '--loop', 'uvloop']))\n"
    )
    result = run([*PYTHON, "-c", code])
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "uvloop is not installed", "pip install")


def test_help_exits_0() -> None:
    result = run(module_command("--help"))
    assert result.returncode == 0
    assert result.stdout.startswith("usage:")
    for option in (
        "--host",
        "--port",
        "--impl",
        "--loop",
        "--shutdown-timeout",
        "--log-level",
    ):
        assert option in result.stdout


# --- line mode ----------------------------------------------------------------


def _send_fin_and_read_all(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload``, half-close, and read until the server closes."""
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass  # the close policy may reset: what came before still counts
    return bytes(received)


@pytest.mark.parametrize("impl", IMPLS)
def test_lines_are_echoed_as_soon_as_complete_and_the_tail_at_eof(impl: str) -> None:
    with serving(impl, "--lines") as (_, port), connect(port) as sock:
        sock.sendall(b"first\nsecond\nunfini")
        received = b""
        while received != b"first\nsecond\n":
            chunk = sock.recv(65536)
            assert chunk, f"closed early after {received!r}"
            received += chunk
        # The unterminated tail is held back until EOF, then echoed as is.
        assert _send_fin_and_read_all(sock, b"shed") == b"unfinished"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("close", b"ok\n"),
        ("skip", b"ok\nafter\ntail"),
        ("reply", b"ok\nERROR line too long\nafter\ntail"),
    ],
)
def test_long_line_policies(impl: str, policy: str, expected: bytes) -> None:
    args = ("--lines", "--max-line-length", "8", "--on-long-line", policy)
    with serving(impl, *args) as (server, port), connect(port) as sock:
        sock.sendall(b"ok\n")
        assert sock.recv(3) == b"ok\n"
        got = b"ok\n" + _send_fin_and_read_all(sock, b"x" * 9 + b"\nafter\ntail")
        server.wait_for_line(r"line longer than 8 bytes \(policy: " + policy)
    assert got == expected


@pytest.mark.parametrize("impl", IMPLS)
def test_line_of_exactly_the_cap_and_a_crlf_delimiter(impl: str) -> None:
    args = ("--lines", "--delimiter", r"\r\n", "--max-line-length", "8")
    with serving(impl, *args) as (_, port), connect(port) as sock:
        payload = b"12345678\r\nsplit\r" + b"\nlone\nlf\r\n"
        assert _send_fin_and_read_all(sock, payload) == payload


def test_ipv6_host_is_logged_in_brackets() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    server = ServerProcess(module_command("--host", "::1", "--port", "0"))
    try:
        port = int(server.wait_for_line(r"listening on \[::1\]:(\d+)").group(1))
        with socket.create_connection(("::1", port), timeout=10) as sock:
            assert exchange(sock, b"v6") == b"v6"
        assert server.stop() == 0
    finally:
        server.close()


_README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_synopsis_is_the_parsers_usage() -> None:
    parser = build_parser()
    # The width the docs' CLI page renders it at, whatever the terminal.
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=78)
    usage = parser.format_usage().rstrip()
    section = _README.read_text().split("## Command line\n", 1)[1]
    block = section.split("```\n", 2)[1]
    assert block.rstrip() == usage, f"README's synopsis should be:\n{usage}"


def test_the_readme_summary_sample_has_every_counter() -> None:
    text = _README.read_text()
    start = text.index("] stopped: connections")
    sample = " ".join(text[start : text.index("```", start)].split()[1:])
    # The summary's own wording, with any numbers.
    words = re.escape(ServerStats().summary()).replace("0", r"\d+")
    assert re.fullmatch("stopped: " + words, sample), f"{sample!r} is not a summary"


def test_every_option_says_what_it_does_in_text_a_browser_shows_as_written() -> None:
    for action in build_parser()._actions:
        text = re.sub(r"\(default: [^)]*\)", "", action.help or "").strip()
        assert len(text) > 10, f"{action.option_strings} has no help of its own"
        # Two single quotes render as one double quote in most fonts.
        assert "''" not in (action.help or ""), action.option_strings


def test_the_readme_names_the_extra_the_uvloop_error_names() -> None:
    source = inspect.getsource(loops.loop_factory)
    hint = re.search(r"pip install '([^']+)'", source)
    assert hint is not None and hint[1] == "tornado_echo[uvloop]"
    section = _README.read_text().split("## Command line\n", 1)[1].split("\n## ", 1)[0]
    assert f"pip install '{hint[1]}'" in section
