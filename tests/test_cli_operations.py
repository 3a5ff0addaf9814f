"""Operating the ``tornado-echo`` command: fd exhaustion, listen addresses,
unix sockets, signals, stats, several processes and systemd, each through a
real subprocess and real loopback or unix sockets, with every wait bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _proc import (
    PYTHON,
    TIMEOUT,
    ServerProcess,
    connect,
    echo_once,
    exchange,
    needs_tool,
    run,
    running_server,
)
from test_cli import assert_one_line_error, module_command

LINE_ECHO_SCRIPT = """
import sys
from tornado.log import enable_pretty_logging
import tornado_echo
from tornado_echo.limits import Limits

class LineEcho(tornado_echo.LineServer):
    async def handle_line(self, conn, line):
        return line

enable_pretty_logging()
tornado_echo.run(0, limits=Limits(max_connections=int(sys.argv[1])), server=LineEcho)
"""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s"
        time.sleep(0.02)


def low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


@contextlib.contextmanager
def fd_limited(
    argv: list[str],
) -> Iterator[tuple[ServerProcess, int, list[socket.socket]]]:
    """A server with RLIMIT_NOFILE at 64, its port, and a list for clients."""
    server = ServerProcess(argv, preexec_fn=low_fd_limit)
    clients: list[socket.socket] = []
    try:
        yield server, server.wait_listening(), clients
    finally:
        for sock in clients:
            sock.close()
        server.close()


def close_all(clients: list[socket.socket]) -> None:
    for sock in clients:
        sock.close()
    clients.clear()


@pytest.mark.parametrize("kind", ["stream", "compat", "lineserver"])
def test_running_out_of_fds_backs_off_quietly_and_recovers(
    kind: str, tmp_path: Path
) -> None:
    if kind == "lineserver":
        script = tmp_path / "line_echo.py"
        script.write_text(LINE_ECHO_SCRIPT)
        argv = [sys.executable, str(script), "1000"]
    else:
        # A cap above the fd limit, so accept() itself runs out.
        argv = module_command(
            "--port", "0", "--impl", kind, "--max-connections", "1000"
        )
    with fd_limited(argv) as (server, port, clients):
        clients += [connect(port) for _ in range(120)]
        server.wait_for_line("cannot accept on .*Too many open files")
        # A spinning server burns a core; one that backs off stays idle.
        start_cpu, start = cpu_seconds(server.proc.pid), time.monotonic()
        time.sleep(3)
        busy = (cpu_seconds(server.proc.pid) - start_cpu) / (time.monotonic() - start)
        assert busy < 0.25, f"the server used {busy:.0%} of a core while out of fds"
        close_all(clients)
        server.wait_for_line("accepting again after")
        assert echo_once(port, b"recovered\n") == b"recovered\n"
        assert server.stop() == 0
        stderr = server.stderr()
    assert "Traceback" not in stderr
    assert stderr.count("cannot accept") == 1, stderr
    assert len(stderr.splitlines()) < 20, stderr


def test_the_default_connection_cap_stays_below_the_fd_limit() -> None:
    # RLIMIT_NOFILE 64 gives a default cap of 32: accept never runs out.
    with fd_limited(module_command("--port", "0")) as (server, port, clients):
        clients += [connect(port) for _ in range(40)]
        server.wait_for_line(r"connection limit reached \(32 open\)")
        # The backlog is served in order: freeing one slot lets the 33rd in.
        clients.pop(0).close()
        assert exchange(clients[31], b"waited") == b"waited"
        close_all(clients)
        assert server.stop() == 0
        stderr = server.stderr()
    assert "cannot accept" not in stderr
    assert "below the connection limit" in stderr


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_repeated_host_listens_on_each_address_at_one_port() -> None:
    argv = module_command("--port", "0", "--host", "127.0.0.1", "--host", "::1")
    with running_server(argv) as (server, port):
        server.wait_for_line(rf"listening on \[::1\]:{port}")
        assert echo_once(port, b"v4") == b"v4"
        with socket.create_connection(("::1", port), timeout=TIMEOUT) as sock:
            assert exchange(sock, b"v6") == b"v6"
        assert server.stop() == 0


def test_bad_listen_options_are_usage_errors() -> None:
    for args, needle in (
        (["--unix-mode", "9"], "octal"),
        (["--max-connections", "0"], "at least 1"),
        (["--processes", "-1"], "0 or more"),
        (["--idle-timeout", "-1"], "0 or more"),
        (["--stats-interval", "soon"], "not a number"),
    ):
        result = run(module_command(*args))
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr and "Traceback" not in result.stderr


@contextlib.contextmanager
def unix_server(path: Path, *args: str) -> Iterator[ServerProcess]:
    server = ServerProcess(module_command("--unix", str(path), *args))
    try:
        server.wait_for_line(f"listening on {re.escape(str(path))}")
        yield server
    finally:
        server.close()


def unix_echo(path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        echoed = exchange(sock, payload)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""
    return echoed


@pytest.mark.parametrize("impl", ["stream", "compat"])
def test_unix_socket_echoes_with_its_mode_and_is_removed_on_exit(
    impl: str, tmp_path: Path
) -> None:
    path = tmp_path / "echo.sock"
    with unix_server(path, "--impl", impl, "--unix-mode", "640") as server:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert unix_echo(path, b"over unix" * 1000) == b"over unix" * 1000
        # --unix alone: no TCP listener.
        assert not any("127.0.0.1" in line for line in server.lines)
        assert server.stop() == 0
    assert not path.exists()


def test_unix_with_port_listens_on_both(tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"
    argv = module_command("--unix", str(path), "--port", "0")
    with running_server(argv) as (server, port):
        assert echo_once(port, b"tcp") == b"tcp"
        assert unix_echo(path, b"unix") == b"unix"
        assert server.stop() == 0
    assert not path.exists()


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, and nobody listens on it
    with unix_server(path) as server:
        assert unix_echo(path, b"fresh") == b"fresh"
        assert server.stop() == 0


def test_a_path_that_is_not_a_socket_is_never_deleted(tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    result = run(module_command("--unix", str(path)))
    assert result.returncode == 1
    assert_one_line_error(result.stderr, str(path), "not a socket")
    assert path.read_text() == "keep me"


def test_a_unix_path_too_long_for_a_socket_says_so(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 120)
    result = run(module_command("--unix", str(path)))
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "at most 107", "choose a shorter one")
    assert "None" not in result.stderr


def test_a_socket_another_server_listens_on_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"
    with unix_server(path) as first:
        result = run(module_command("--unix", str(path)))
        assert result.returncode == 1
        assert_one_line_error(result.stderr, "another server is listening")
        assert unix_echo(path, b"still mine") == b"still mine"
        assert first.stop() == 0
    assert not path.exists()


@pytest.mark.parametrize("impl", ["stream", "compat"])
def test_a_second_sigint_closes_every_connection_at_once(impl: str) -> None:
    argv = module_command("--port", "0", "--impl", impl, "--shutdown-timeout", "60")
    with running_server(argv) as (server, port), connect(port) as client:
        assert exchange(client, b"hold on") == b"hold on"
        server.proc.send_signal(signal.SIGINT)
        server.wait_for_line("shutting down")
        # Draining: the open connection still echoes.
        assert exchange(client, b"still") == b"still"
        server.proc.send_signal(signal.SIGINT)
        assert server.wait(timeout=5) == 0
        stderr = server.stderr()
        assert client.recv(1) == b""
    assert "second interrupt: closed 1 connection(s) at once" in stderr
    assert "a second SIGINT (Ctrl-C) closes every connection now" in stderr
    # The interrupt closed it, not the deadline, 60 s away.
    assert "0 connection(s) drained, 1 closed on request" in stderr
    assert "deadline" not in stderr
    assert "stopped: connections 0 open, 1 total, 0 drained, 1 force-closed" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("impl", "processes"), [("stream", "1"), ("compat", "1"), ("stream", "2")]
)
def test_sighup_drains_and_exits_like_sigterm(impl: str, processes: str) -> None:
    argv = module_command(
        "--port", "0", "--impl", impl, "--processes", processes,
        "--shutdown-timeout", "30",
    )  # fmt: skip
    with running_server(argv) as (server, port), connect(port) as client:
        assert exchange(client, b"hold on") == b"hold on"
        server.proc.send_signal(signal.SIGHUP)
        if processes == "1":
            server.wait_for_line("shutting down on SIGHUP, as on SIGTERM")
        else:
            # The parent stops its workers as it would on SIGTERM.
            server.wait_for_line("received SIGHUP; stopping 2 workers")
            server.wait_for_line("shutting down on SIGTERM")
        # Draining, not dead: the open connection is still served.
        assert exchange(client, b"still here") == b"still here"
        client.shutdown(socket.SHUT_WR)
        assert client.recv(1) == b""
        assert server.wait() == 0
        stderr = server.stderr()
    assert re.search(r"stopped: connections 0 open, 1 total, 1 drained", stderr)
    assert "Traceback" not in stderr


def ignore_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


@pytest.mark.parametrize("processes", ["1", "2"])
def test_under_nohup_sighup_is_left_ignored(processes: str) -> None:
    argv = module_command("--port", "0", "--processes", processes)
    server = ServerProcess(argv, preexec_fn=ignore_sighup)
    try:
        port = server.wait_listening()
        server.proc.send_signal(signal.SIGHUP)
        assert echo_once(port, b"still up") == b"still up"
        assert server.proc.poll() is None
        assert server.stop(signal.SIGTERM) == 0
        assert "on SIGHUP" not in server.stderr()
    finally:
        server.close()


def test_stats_are_logged_periodically_and_at_shutdown() -> None:
    argv = module_command("--port", "0", "--lines", "--stats-interval", "0.2")
    with running_server(argv) as (server, port):
        assert echo_once(port, b"one\ntwo\n") == b"one\ntwo\n"
        server.wait_for_line(
            r"stats: connections 0 open, 1 total.*bytes 8 in, 8 out; lines 2"
        )
        assert server.stop() == 0
        stderr = server.stderr()
    last = stderr.splitlines()[-1]
    assert "stopped:" in last and "1 total" in last and "lines 2" in last


WORKER = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def answered_by_the_other(port: int, stopped: int) -> None:
    """With worker ``stopped`` frozen, the echo still works: another serves."""
    os.kill(stopped, signal.SIGSTOP)
    try:
        assert echo_once(port, b"who?") == b"who?"
    finally:
        os.kill(stopped, signal.SIGCONT)


def test_processes_share_the_port_restart_crashes_and_leave_no_orphan() -> None:
    argv = module_command("--port", "0", "--processes", "2")
    with running_server(argv) as (server, port):
        # Every worker is up before the parent says where it listens.
        pids = {
            int(m[1]): int(m[2]) for line in server.lines if (m := WORKER.search(line))
        }
        first, second = pids[0], pids[1]
        # Each worker serves while the other is frozen.
        answered_by_the_other(port, first)
        answered_by_the_other(port, second)
        os.kill(first, signal.SIGKILL)
        match = server.wait_for_line(WORKER)
        assert match.group(1) == "0"
        replacement = int(match.group(2))
        assert replacement != first
        answered_by_the_other(port, second)
        assert server.stop(signal.SIGTERM) == 0
        stderr = server.stderr()
    wait_for(lambda: not any(alive(pid) for pid in (first, second, replacement)))
    assert "Traceback" not in stderr


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(TIMEOUT)
    try:
        yield sock, path
    finally:
        sock.close()


@pytest.mark.parametrize("processes", ["1", "2"])
def test_systemd_readiness_is_notified(
    processes: str, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    env = {**os.environ, "NOTIFY_SOCKET": path}
    argv = module_command("--port", "0", "--processes", processes)
    server = ServerProcess(argv, env=env)
    try:
        port = server.wait_listening()
        assert sock.recv(4096) == b"READY=1"
        assert echo_once(port, b"ready") == b"ready"
        assert server.stop() == 0
        assert sock.recv(4096) == b"STOPPING=1"
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(4096)  # and only from the parent, not from a worker
    finally:
        server.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@needs_tool("systemd-socket-activate", "systemd")
@pytest.mark.parametrize("processes", ["1", "2"])
def test_socket_activation_serves_on_the_inherited_socket(processes: str) -> None:
    port = free_port()
    env_args = [f"-E{name}" for name in ("PYTHONPATH",) if name in os.environ]
    argv = [
        "systemd-socket-activate",
        f"--listen=127.0.0.1:{port}",
        "--fdname=echo",
        *env_args,
        *module_command("--port", "1", "--processes", processes),
    ]
    server = ServerProcess(argv)
    try:
        server.wait_for_line("Listening on")
        # systemd-socket-activate starts the server on the first connection.
        assert echo_once(port, b"activated") == b"activated"
        server.wait_for_line(rf"using systemd socket 'echo': 127\.0\.0\.1:{port}")
        assert server.stop() == 0
        stderr = server.stderr()
    finally:
        server.close()
    # --port 1 was ignored: nothing tried to bind it.
    assert "cannot listen" not in stderr


def udp_echo(port: int, payload: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendto(payload, ("127.0.0.1", port))
        data, source = sock.recvfrom(65536)
    assert source == ("127.0.0.1", port)
    return data


@pytest.mark.parametrize("processes", ["1", "2"])
def test_udp_echo_shares_the_tcp_port(processes: str) -> None:
    argv = module_command("--port", "0", "--udp", "--processes", processes)
    with running_server(argv) as (server, port):
        server.wait_for_line(rf"listening on 127\.0\.0\.1:{port} \(UDP\)")
        assert udp_echo(port, b"datagram") == b"datagram"
        assert echo_once(port, b"stream") == b"stream"
        assert server.stop() == 0
        stderr = server.stderr()
    assert "stopped UDP echo: datagrams 1 received, 1 replied" in stderr, stderr


def test_udp_is_off_unless_asked_for() -> None:
    with running_server(module_command("--port", "0")) as (server, port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            sock.sendto(b"anyone?", ("127.0.0.1", port))
            with pytest.raises(OSError):  # a timeout, or ICMP port unreachable
                sock.recvfrom(100)
        assert server.stop() == 0


def test_proxy_udp_and_line_options_that_cannot_work_are_usage_errors(
    tmp_path: Path,
) -> None:
    for args, needle in (
        (["--proxy-from", "10.0.0.0/8"], "need --proxy-protocol"),
        (["--proxy-timeout", "2"], "need --proxy-protocol"),
        (["--proxy-protocol", "--proxy-from", "10.0.0.0/33"], "CIDR"),
        (["--proxy-protocol", "--proxy-timeout", "0"], "more than 0"),
        (["--udp", "--unix", str(tmp_path / "s")], "--udp needs a TCP port"),
        (["--max-line-length", "80"], "need --lines"),
        (["--delimiter", r"\r\n"], "need --lines"),
        (["--on-long-line", "skip"], "need --lines"),
    ):
        result = run(module_command(*args))
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr and "Traceback" not in result.stderr


def test_processes_above_the_bound_is_a_usage_error() -> None:
    result = run(module_command("--processes", "100000"))
    assert result.returncode == 2, result.stderr
    assert "at most" in result.stderr and "per CPU" in result.stderr
    assert "worker" not in result.stderr and "Traceback" not in result.stderr


def test_more_workers_than_cpus_is_a_warning() -> None:
    count = len(os.sched_getaffinity(0)) + 1
    argv = module_command("--port", "0", "--processes", str(count))
    with running_server(argv) as (server, _):
        assert server.stop(signal.SIGTERM) == 0
        assert f"{count} worker processes on" in server.stderr()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_during_start_up_stops_at_once(sig: signal.Signals) -> None:
    # The most workers allowed: forking them all takes far longer than the
    # signal takes to arrive.
    count = 32 * len(os.sched_getaffinity(0))
    server = ServerProcess(module_command("--port", "0", "--processes", str(count)))
    try:
        server.wait_for_line(WORKER)
        sent = time.monotonic()
        status = server.stop(sig, timeout=5)
        took = time.monotonic() - sent
        stderr = server.stderr()
    finally:
        server.close()
    assert status == 0, stderr
    assert took < 3, f"{took:.1f}s to stop:\n{stderr}"
    lines = stderr.splitlines()
    received = next(i for i, line in enumerate(lines) if f"received {sig.name}" in line)
    started = [int(m[2]) for line in lines if (m := WORKER.search(line))]
    assert len(started) < count, "every worker was forked before the signal took effect"
    assert not any(WORKER.search(line) for line in lines[received:]), stderr
    wait_for(lambda: not any(alive(pid) for pid in started))
    assert "Traceback" not in stderr


def test_each_worker_names_itself_and_the_parent_adds_up_their_summaries() -> None:
    argv = module_command("--port", "0", "--processes", "2")
    with running_server(argv) as (server, port):
        pids = [int(m[2]) for line in server.lines if (m := WORKER.search(line))]
        # One connection to each worker (the other one frozen), so both serve.
        for pid in pids:
            answered_by_the_other(port, pid)
        assert server.stop(signal.SIGTERM) == 0
        stderr = server.stderr()
    for index in (0, 1):
        assert f"worker {index}: shutting down on SIGTERM" in stderr
        assert f"worker {index}: stopped: connections 0 open, 1 total" in stderr
    assert (
        "workers stopped, in all: connections 0 open, 2 total, 0 drained, "
        "0 force-closed; bytes 8 in, 8 out"
    ) in stderr.splitlines()[-1]


_UPPER_SCRIPT = """\
{setup}
import tornado_echo


class Upper(tornado_echo.LineServer):
    async def handle_line(self, conn, line):
        return line.upper()


tornado_echo.run(server=Upper, port=0)
"""


def test_run_in_a_script_without_logging_set_up_says_where_and_what(
    tmp_path: Path,
) -> None:
    script = tmp_path / "upper.py"
    script.write_text(_UPPER_SCRIPT.format(setup=""))
    with running_server([*PYTHON, str(script)]) as (server, port):
        assert echo_once(port, b"hi\n") == b"HI\n"
        assert server.stop() == 0
        stderr = server.stderr()
    # Tornado's format, as the CLI logs: "[I 261207 12:00:00 runner:278] ..."
    assert re.search(
        r"^\[I \d{6} [\d:]{8} runner:\d+\] listening on", stderr, re.MULTILINE
    )
    assert "stopped: connections 0 open, 1 total" in stderr


def test_run_leaves_an_applications_logging_configuration_alone(
    tmp_path: Path,
) -> None:
    script = tmp_path / "upper.py"
    setup = 'import logging\nlogging.basicConfig(level=logging.INFO, format="APP %(message)s")'
    script.write_text(_UPPER_SCRIPT.format(setup=setup))
    with running_server([*PYTHON, str(script)]) as (server, _):
        assert server.stop() == 0
        lines = server.stderr().splitlines()
    assert lines and all(line.startswith("APP ") for line in lines), lines
