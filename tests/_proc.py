"""Run servers as subprocesses in tests, with every wait bounded.

Shared by ``test_cli.py`` and ``test_examples.py``. `ServerProcess` starts a
command, reads its stderr on a thread (so a silent or hung child cannot block
a test), and waits for the ``listening on 127.0.0.1:PORT`` log line;
`running_server` wraps it in a context manager that always kills the child.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

#: How long a child may take to start, stop or answer before a test fails.
TIMEOUT = 10.0

#: The interpreter for children. DeprecationWarnings are errors, so a child
#: that touches the IOLoop outside a running loop (or any other deprecated
#: API) fails the test instead of warning unseen.
PYTHON = (sys.executable, "-W", "error::DeprecationWarning")

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


class ServerProcess:
    """A server subprocess whose stderr lines are collected as they arrive."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=env,
            preexec_fn=preexec_fn,  # noqa: PLW1509 - only setrlimit, before exec
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)  # EOF: the child closed stderr (it exited)

    def wait_for_line(
        self, pattern: str | re.Pattern[str], timeout: float = TIMEOUT
    ) -> re.Match[str]:
        """The match of the next stderr line matching ``pattern``.

        Fails the test if the child exits, or ``timeout`` seconds pass, first.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._new.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                raise AssertionError(
                    self._describe(f"no line matching {pattern!r} within {timeout}s")
                ) from None
            if line is None:
                self._new.put(None)  # keep EOF visible to later waits
                raise AssertionError(
                    self._describe(f"stderr closed before a line matching {pattern!r}")
                )
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def wait_listening(self, timeout: float = TIMEOUT) -> int:
        """Wait for ``listening on 127.0.0.1:PORT`` and return PORT."""
        return int(self.wait_for_line(LISTENING, timeout).group(1))

    def stop(
        self, sig: signal.Signals = signal.SIGTERM, timeout: float = TIMEOUT
    ) -> int:
        """Send ``sig`` and return the exit status, failing after ``timeout``."""
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for the child to exit and return its status."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                self._describe(f"still running {timeout}s later")
            ) from None

    def stderr(self) -> str:
        """All of stderr; call once the child has exited."""
        self._reader.join(TIMEOUT)
        while True:
            try:
                line = self._new.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._new.put(None)
                break
            self.lines.append(line)
        return "\n".join(self.lines)

    def close(self) -> None:
        """Kill the child if it is still running, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def _describe(self, problem: str) -> str:
        seen = "\n".join(self.lines) or "(nothing)"
        return f"{self.argv}: {problem}; stderr so far:\n{seen}"


@contextlib.contextmanager
def running_server(
    argv: Sequence[str], timeout: float = TIMEOUT
) -> Iterator[tuple[ServerProcess, int]]:
    """Start ``argv``, wait until it logs its port, yield ``(server, port)``, kill it after."""
    server = ServerProcess(argv)
    try:
        port = server.wait_listening(timeout)
        yield server, port
    finally:
        server.close()


def connect(port: int, timeout: float = TIMEOUT) -> socket.socket:
    """A client socket connected to 127.0.0.1:``port``, with ``timeout`` on every call."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def exchange(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` on ``sock`` and read back as many bytes (or until EOF)."""
    sock.sendall(payload)
    received = bytearray()
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return bytes(received)


def echo_once(port: int, payload: bytes) -> bytes:
    """Connect, exchange ``payload``, half-close, and return what came back."""
    with connect(port) as sock:
        echoed = exchange(sock, payload)
        sock.shutdown(socket.SHUT_WR)
        # After a half-close an echo server has nothing more to say: EOF.
        assert sock.recv(1) == b""
    return echoed


def run(
    argv: Sequence[str], timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run a short-lived command to completion, capturing text stdout/stderr."""
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )


def needs_tool(name: str, package: str) -> pytest.MarkDecorator:
    """Skip unless the command ``name`` is installed, except in CI.

    ``.ci/run`` installs the Debian ``package`` and sets
    ``TORNADO_ECHO_REQUIRE_TOOLS``: there a missing tool must fail the test,
    never skip it silently.
    """
    missing = shutil.which(name) is None and not os.environ.get(
        "TORNADO_ECHO_REQUIRE_TOOLS"
    )
    return pytest.mark.skipif(
        missing, reason=f"{name} is not installed (Debian package: {package})"
    )
