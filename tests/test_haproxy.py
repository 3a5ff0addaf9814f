"""A real HAProxy in front of two ``tornado-echo --proxy-protocol`` backends.

HAProxy runs ``examples/haproxy/haproxy.cfg`` itself, with free loopback
ports in place of the example's, so the shipped configuration is what is
tested: round robin, ``send-proxy-v2``, and health checks that send a
PROXY header too.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from _proc import TIMEOUT, exchange, needs_tool, running_server
from test_cli import module_command

EXAMPLE = (
    Path(__file__).resolve().parent.parent / "examples" / "haproxy" / "haproxy.cfg"
)

pytestmark = needs_tool("haproxy", "haproxy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def backend_command() -> list[str]:
    return module_command(
        "--port",
        "0",
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.1/32",
        "--log-connections",
    )


@contextlib.contextmanager
def haproxy(config: str, tmp_path: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    check = subprocess.run(
        ["haproxy", "-c", "-f", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen(
        ["haproxy", "-db", "-f", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert proc.poll() is None, "haproxy exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "haproxy never listened"
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(TIMEOUT)


def echo_through(port: int, payload: bytes) -> tuple[bytes, int]:
    """Echo ``payload``, half-close, read to EOF; returns it and our local port."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        local_port = sock.getsockname()[1]
        echoed = exchange(sock, payload)
        sock.shutdown(socket.SHUT_WR)
        rest = bytearray()
        while chunk := sock.recv(65536):
            rest += chunk
    return echoed + bytes(rest), local_port


def test_haproxy_with_proxy_v2_reaches_both_backends_with_real_client_ports(
    tmp_path: Path,
) -> None:
    with (
        running_server(backend_command()) as (first, port1),
        running_server(backend_command()) as (second, port2),
    ):
        front = free_port()
        config = EXAMPLE.read_text()
        for old, new in (("10000", front), ("10001", port1), ("10002", port2)):
            config, count = re.subn(
                rf"127\.0\.0\.1:{old}\b", f"127.0.0.1:{new}", config
            )
            assert count == 1, f"127.0.0.1:{old} not found once in {EXAMPLE}"
        with haproxy(config, tmp_path, front):
            ports = []
            # Exact echo, a half-close, and 1 MiB, each through HAProxy.
            for payload in (b"hello\n", b"no newline", bytes(range(256)) * 4096):
                echoed, local_port = echo_through(front, payload)
                assert echoed == payload
                ports.append(local_port)
            for _ in range(3):
                echoed, local_port = echo_through(front, b"again")
                assert echoed == b"again"
                ports.append(local_port)
        logs = {}
        for name, backend in (("first", first), ("second", second)):
            assert backend.stop() == 0
            logs[name] = backend.stderr()
    served = {
        name: {p for p in ports if f"127.0.0.1:{p}: connected" in log}
        for name, log in logs.items()
    }
    # Round robin: both backends served clients ...
    assert served["first"] and served["second"], logs
    # ... and between them saw every client's real port, each exactly once.
    assert served["first"] | served["second"] == set(ports)
    assert not served["first"] & served["second"]
    for log in logs.values():
        assert "Traceback" not in log
        # HAProxy's health checks send a LOCAL header: none was rejected.
        assert "PROXY headers rejected 0" in log.splitlines()[-1]
