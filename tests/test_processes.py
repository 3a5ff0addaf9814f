"""`tornado_echo.processes`: pre-fork workers, checked with real processes.

Each test runs `_DRIVER` (a script in ``tmp_path``) as a subprocess. It binds
a loopback listener, forks two workers with `supervise`, and each worker
answers every connection with its own pid, one connection at a time. That
makes the pids observable from outside: SIGSTOP one worker and the next
connection must be answered by the other. Every wait is bounded, and every
process running the driver is killed when a test ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _proc import PYTHON, TIMEOUT, ServerProcess, connect

from tornado_echo.processes import MAX_PER_CPU, resolve_count, supervise

_DRIVER = """\
import logging
import os
import signal
import socket
import sys

from tornado_echo.processes import supervise

mode, max_restarts, restart_window, stop_timeout = sys.argv[1:]
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", file=sys.stderr, flush=True)
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
log = logging.getLogger("driver")


def on_signal(signum, frame):
    log.info("pid %d got %s", os.getpid(), signal.Signals(signum).name)
    if signum == signal.SIGINT or mode == "serve":
        sys.exit(0)


def worker(index):
    if mode == "crash":
        return 1
    # serve: SIGTERM exits 0. stubborn: SIGTERM is ignored.
    # drain: SIGTERM is only logged, a SIGINT exits 0.
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    log.info("pid %d accepting, NOTIFY_SOCKET=%s", os.getpid(), os.environ.get("NOTIFY_SOCKET"))
    reply = str(os.getpid()).encode()
    while True:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(reply)


sys.exit(
    supervise(
        2,
        worker,
        max_restarts=int(max_restarts),
        restart_window=float(restart_window),
        stop_timeout=float(stop_timeout) if stop_timeout != "none" else None,
        on_ready=lambda: log.info("on_ready, NOTIFY_SOCKET=%s", os.environ.get("NOTIFY_SOCKET")),
        on_stopping=lambda: log.info("on_stopping"),
    )
)
"""

STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")
ACCEPTING = re.compile(r"pid (\d+) accepting")


class Supervisor:
    """The driver's parent process, its port, and the workers it logged."""

    def __init__(self, server: ServerProcess, port: int) -> None:
        self.server = server
        self.port = port

    def seen(self, pattern: re.Pattern[str], n: int) -> list[re.Match[str]]:
        """Matches of ``pattern`` in all stderr so far, once there are ``n``."""
        while True:
            matches = [m for line in self.server.lines if (m := pattern.search(line))]
            if len(matches) >= n:
                return matches
            self.server.wait_for_line(pattern)

    def started(self, n: int = 2) -> list[tuple[int, int]]:
        """``(index, pid)`` from the first ``n`` ``worker N started`` lines."""
        return [(int(m[1]), int(m[2])) for m in self.seen(STARTED, n)[:n]]

    def accepting(self, n: int = 2) -> set[int]:
        """Pids of the first ``n`` workers to have their handlers installed."""
        return {int(m[1]) for m in self.seen(ACCEPTING, n)[:n]}

    def stderr(self) -> str:
        return self.server.stderr()


@contextlib.contextmanager
def supervisor(
    tmp_path: Path,
    mode: str = "serve",
    max_restarts: int = 10,
    restart_window: float = 60.0,
    stop_timeout: float | None = None,
) -> Iterator[Supervisor]:
    """Run the driver; on the way out kill it and every worker it forked."""
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    argv = [
        *PYTHON,
        str(script),
        mode,
        str(max_restarts),
        str(restart_window),
        "none" if stop_timeout is None else str(stop_timeout),
    ]
    server = ServerProcess(argv)
    try:
        yield Supervisor(server, server.wait_listening())
    finally:
        # The parent first, so it cannot fork a replacement for a worker
        # killed next. Workers are found by command line, not by the log,
        # so one that started unseen, or ignores SIGTERM, is killed too.
        if server.proc.poll() is None:
            server.proc.kill()
        for pid in _running(str(script)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.close()


def _running(needle: str) -> list[int]:
    """Live (not zombie) processes whose command line contains ``needle``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()  # empty for a zombie
        except OSError:
            continue
        if needle.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def _state(pid: int) -> str | None:
    """The state letter of ``pid`` (``R``, ``S``, ``T``, ``Z``...), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rpartition(")")[2].split()[0]  # the name before may hold spaces


def _wait_for(
    condition: str, check: Callable[[], bool], timeout: float = TIMEOUT
) -> None:
    """Poll ``check()`` until true; fail, saying ``condition``, after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not {condition} within {timeout}s"
        time.sleep(0.01)


def _survivors(pids: set[int], zombies_ok: bool = False) -> dict[int, str]:
    """The state of each of ``pids`` still running, or (unless ``zombies_ok``) unreaped."""
    states = {pid: _state(pid) for pid in pids}
    # An orphan's zombie waits for whoever adopted it, but runs no code.
    done = {None, "Z", "X"} if zombies_ok else {None}
    return {pid: str(state) for pid, state in states.items() if state not in done}


def _wait_gone(pids: set[int], zombies_ok: bool = False) -> None:
    """Fail unless every one of ``pids`` is gone within `TIMEOUT`."""
    deadline = time.monotonic() + TIMEOUT
    while left := _survivors(pids, zombies_ok):
        assert time.monotonic() < deadline, f"still there after {TIMEOUT}s: {left}"
        time.sleep(0.01)


def _answering_pid(port: int) -> int:
    """Connect and return the pid the worker that accepted replies with."""
    with connect(port) as sock:
        reply = b""
        while chunk := sock.recv(64):
            reply += chunk
    return int(reply)


@contextlib.contextmanager
def _stopped(pid: int) -> Iterator[None]:
    """Hold ``pid`` in SIGSTOP, so it cannot accept, for the block."""
    os.kill(pid, signal.SIGSTOP)
    try:
        # Until it has stopped, a worker woken in accept() could still take
        # the next connection and then sit on it.
        _wait_for(f"pid {pid} stopped", lambda: _state(pid) == "T")
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _served_by_each(port: int, pids: dict[int, int]) -> dict[int, int]:
    """For each worker index, the pid that answers while only it runs."""
    answered = {}
    for index in pids:
        with contextlib.ExitStack() as stack:
            for other, pid in pids.items():
                if other != index:
                    stack.enter_context(_stopped(pid))
            answered[index] = _answering_pid(port)
    return answered


def test_both_workers_serve_connections_on_the_parents_socket(
    tmp_path: Path,
) -> None:
    with supervisor(tmp_path) as sup:
        pids = dict(sup.started())
        assert sorted(pids) == [0, 1]
        assert len(set(pids.values())) == 2
        assert _served_by_each(sup.port, pids) == pids


def test_killed_worker_is_replaced_under_the_same_index(tmp_path: Path) -> None:
    with supervisor(tmp_path) as sup:
        pids = dict(sup.started())
        old = pids[0]
        os.kill(old, signal.SIGKILL)
        sup.seen(
            re.compile(rf"WARNING worker 0 \(pid {old}\) was killed by SIGKILL"), 1
        )
        index, new = sup.started(3)[2]
        assert index == 0
        assert new not in (old, pids[1])
        _wait_gone({old})
        pids[0] = new
        assert _served_by_each(sup.port, pids) == pids


def test_sigterm_stops_every_worker_and_exits_0(tmp_path: Path) -> None:
    with supervisor(tmp_path) as sup:
        workers = {pid for _, pid in sup.started()}
        assert sup.accepting() == workers
        assert sup.server.stop(signal.SIGTERM) == 0
        stderr = sup.stderr()
    # The parent reaps its workers before it exits: not even zombies remain.
    assert not _survivors(workers)
    assert "INFO received SIGTERM; stopping 2 workers" in stderr
    for pid in workers:
        assert f"pid {pid} got SIGTERM" in stderr
    assert "Traceback" not in stderr


def test_only_the_parent_keeps_notify_socket_and_runs_the_hooks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/nonexistent/notify")
    with supervisor(tmp_path) as sup:
        sup.seen(re.compile(r"on_ready, NOTIFY_SOCKET=/run/nonexistent/notify$"), 1)
        sup.accepting()
        assert sup.server.stop(signal.SIGTERM) == 0
        stderr = sup.stderr()
    assert stderr.count("accepting, NOTIFY_SOCKET=None") == 2
    # on_stopping runs before the workers are told to stop.
    assert stderr.index("on_stopping") < stderr.index("got SIGTERM")


def test_workers_die_when_the_parent_is_sigkilled(tmp_path: Path) -> None:
    with supervisor(tmp_path) as sup:
        workers = {pid for _, pid in sup.started()}
        sup.server.proc.kill()
        sup.server.wait()
        _wait_gone(workers, zombies_ok=True)


def test_second_sigint_is_forwarded_and_repeated_sigterm_is_not(
    tmp_path: Path,
) -> None:
    with supervisor(tmp_path, mode="drain") as sup:
        workers = sup.accepting()
        sup.server.proc.send_signal(signal.SIGINT)
        sup.seen(re.compile("got SIGTERM"), len(workers))
        sup.server.proc.send_signal(signal.SIGTERM)
        # Give a (wrongly) forwarded SIGTERM time to show before SIGINT,
        # which sigwaitinfo would otherwise take first.
        time.sleep(0.2)
        assert sup.server.stop(signal.SIGINT) == 0
        stderr = sup.stderr()
    assert stderr.count("got SIGTERM") == 2
    assert stderr.count("got SIGINT") == 2
    assert "received SIGINT while stopping; forwarding it to the workers" in stderr


def test_workers_that_keep_exiting_make_the_parent_give_up_with_1(
    tmp_path: Path,
) -> None:
    with supervisor(tmp_path, mode="crash", max_restarts=3, restart_window=30) as sup:
        assert sup.server.wait() == 1
        stderr = sup.stderr()
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR")]
    assert errors == ["ERROR workers keep exiting: 3 restarts in 30 s; giving up"]
    # Two first starts and three restarts; a fourth would be too many.
    workers = [int(pid) for _, pid in STARTED.findall(stderr)]
    assert len(workers) == 5
    assert "WARNING worker 0 (pid " in stderr
    assert "exited with status 1" in stderr
    assert not _survivors(set(workers))


def test_stop_timeout_sigkills_workers_that_ignore_sigterm(tmp_path: Path) -> None:
    stop_timeout = 0.5
    with supervisor(tmp_path, mode="stubborn", stop_timeout=stop_timeout) as sup:
        workers = sup.accepting()
        signalled = time.monotonic()
        assert sup.server.stop(signal.SIGTERM) == 1
        elapsed = time.monotonic() - signalled
        stderr = sup.stderr()
    assert elapsed >= stop_timeout
    assert not _survivors(set(workers))
    warnings = [line for line in stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == [
        "WARNING 2 worker(s) still running 0.5 s after the stop signal; killing them"
    ]


async def test_supervise_refuses_to_fork_a_running_event_loop() -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        supervise(1, lambda index: 0)


def test_resolve_count_zero_means_one_per_usable_cpu() -> None:
    assert resolve_count(0) == len(os.sched_getaffinity(0))
    assert resolve_count(3) == 3
    with pytest.raises(ValueError, match="0 \\(one per CPU\\)"):
        resolve_count(-1)


def test_resolve_count_refuses_more_than_max_per_cpu() -> None:
    most = MAX_PER_CPU * len(os.sched_getaffinity(0))
    assert resolve_count(most) == most
    with pytest.raises(ValueError, match=f"at most {most} "):
        resolve_count(most + 1)
    with pytest.raises(ValueError, match="positive count"):
        resolve_count(True)
