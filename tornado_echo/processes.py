"""Pre-fork workers: bind in the parent, serve in forked children.

This is Tornado's multi-process pattern (`tornado.process.fork_processes`):
the parent binds the listening sockets, then forks workers that inherit
them, and each worker starts its own event loop and accepts on the same
sockets, so the kernel spreads connections among the workers. Binding first
means a bad address fails once, before any worker exists, and no port is
handed over or shared with ``SO_REUSEPORT``. The parent never runs an event
loop: a loop's selector and threads do not survive a fork.

Unlike ``fork_processes``, `supervise` keeps the parent as a supervisor:

- SIGTERM or SIGINT stops every worker with SIGTERM, waits for them, and
  returns an exit status; ``stop_timeout`` bounds that wait with SIGKILL.
- A worker never outlives the parent, even one killed with SIGKILL: each
  asks the kernel (``PR_SET_PDEATHSIG``) for SIGTERM when its parent dies,
  so a crashed supervisor cannot leave workers holding the port.
- A worker that exits on its own is restarted with the same index, but
  restarts are rate limited rather than counted forever: more than
  ``max_restarts`` within ``restart_window`` seconds means the fault is not
  transient (a bad config, a missing file), and the parent stops the rest
  and returns 1 instead of forking in a tight loop.

::

    import asyncio
    import sys

    import tornado_echo
    from tornado_echo.listen import bind
    from tornado_echo.processes import resolve_count, supervise

    sockets = bind(10000, "127.0.0.1")  # in the parent, before the fork


    def worker(index: int) -> int:
        asyncio.run(tornado_echo.serve(tornado_echo.EchoServer, sockets))
        return 0


    if __name__ == "__main__":
        sys.exit(supervise(resolve_count(0), worker))

`.run` with ``processes=N`` (``tornado-echo --processes N``) does all this.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["MAX_PER_CPU", "resolve_count", "supervise", "usable_cpus"]

log = logging.getLogger("tornado_echo")

# Blocked in the parent for as long as `supervise` runs, so each arrives as a
# sigwaitinfo result rather than as a handler interrupting Python code, and
# a worker forked meanwhile starts with them blocked: a SIGTERM sent to it
# before it has reset its dispositions waits instead of being lost. SIGHUP
# (a closed terminal) stops the workers like SIGTERM, unless it is ignored
# (nohup): blocked, an ignored signal would still be queued and waited for.
_SIGNALS = frozenset({signal.SIGCHLD, signal.SIGINT, signal.SIGTERM})


def _signals() -> frozenset[signal.Signals]:
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        return _SIGNALS
    return _SIGNALS | {signal.SIGHUP}


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

#: The most workers `resolve_count` allows per usable CPU. An event-loop
#: worker keeps one CPU busy by itself, so more than a few per CPU only
#: compete for them, and thousands (a typo: 10000 for 10) would exhaust the
#: machine's memory and process table before the first one served.
MAX_PER_CPU = 32


def usable_cpus() -> int:
    """The CPUs this process may run on (`os.sched_getaffinity`).

    >>> usable_cpus() == len(os.sched_getaffinity(0))
    True

    .. versionadded:: 0.3.0
    """
    return len(os.sched_getaffinity(0))


def resolve_count(processes: int) -> int:
    """The number of workers ``processes`` asks for: 0 means one per CPU.

    "Per CPU" counts the CPUs this process may run on
    (`os.sched_getaffinity`), not those the machine has: under ``taskset``
    or a cpuset, extra workers would only compete for the same CPUs. More
    than `MAX_PER_CPU` per CPU is a `ValueError`, not thousands of forks.

    >>> resolve_count(4)
    4
    >>> resolve_count(0) == len(os.sched_getaffinity(0))
    True

    .. versionadded:: 0.3.0
    """
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 0:
        raise ValueError(
            f"processes must be 0 (one per CPU) or a positive count, not {processes!r}"
        )
    cpus = usable_cpus()
    if processes > MAX_PER_CPU * cpus:
        raise ValueError(
            f"processes must be at most {MAX_PER_CPU * cpus} ({MAX_PER_CPU} per "
            f"CPU, and {cpus} CPU(s) are usable here), not {processes}"
        )
    return processes or cpus


def supervise(
    count: int,
    worker: Callable[[int], int],
    *,
    max_restarts: int = 10,
    restart_window: float = 60.0,
    stop_timeout: float | None = None,
    on_ready: Callable[[], None] | None = None,
    on_stopping: Callable[[], None] | None = None,
) -> int:
    """Run ``worker(index)`` in ``count`` forked processes until SIGTERM or SIGINT.

    Bind the listening sockets first, and call this from the main thread of
    a process with no other threads and no running event loop; each worker
    creates its own loop. A worker runs with Python's default handlers for
    SIGTERM and SIGINT and exits with what ``worker`` returns (an exception
    is logged and exits 1); it never returns into the caller's code. Every
    log message a worker writes starts with ``worker N:``, its index. A
    worker that exits before the stop is logged and restarted with the same
    index, unless more than ``max_restarts`` restarts fall within
    ``restart_window`` seconds: then the rest are stopped and the result is 1.

    The first SIGTERM, SIGINT or SIGHUP (unless SIGHUP is ignored, as under
    ``nohup``) calls ``on_stopping`` and sends SIGTERM to every worker; a second SIGINT is forwarded to them (for workers that
    treat it as "close connections now"), and further SIGTERMs are
    dropped. Workers still running ``stop_timeout`` seconds after the first
    signal are killed with SIGKILL.

    A stop signal that arrives while the workers are being forked takes
    effect at once: no further worker is forked, and those already running
    are stopped as above.

    ``on_ready`` is called once every worker has been forked (not if a stop
    came first). Workers start
    without ``NOTIFY_SOCKET``, so these two hooks are where the parent tells
    systemd ``READY=1`` and ``STOPPING=1``; an exception in one is logged.

    Returns the parent's exit status, for `sys.exit`: 0 if every worker
    exited 0 after the stop, otherwise 1.

    .. versionadded:: 0.3.0
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "supervise() forks, and a running event loop cannot be forked: "
            "call it before starting a loop, and start one in each worker"
        )
    if count < 1:
        raise ValueError(
            f"count must be at least 1, not {count}; "
            "resolve_count(0) gives one worker per CPU"
        )
    if max_restarts < 0:
        raise ValueError(f"max_restarts must be >= 0, not {max_restarts}")
    if restart_window < 0:
        raise ValueError(f"restart_window must be >= 0, not {restart_window}")
    if stop_timeout is not None and stop_timeout < 0:
        raise ValueError(f"stop_timeout must be >= 0 or None, not {stop_timeout}")

    signals = _signals()
    supervisor = _Supervisor(
        worker, max_restarts, restart_window, stop_timeout, on_stopping, signals
    )
    # With SIGCHLD ignored the kernel reaps children itself, and waitpid
    # would never report a worker's exit.
    old_sigchld = signal.getsignal(signal.SIGCHLD)
    if old_sigchld == signal.SIG_IGN:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        return supervisor.run(count, on_ready)
    finally:
        supervisor.kill_all()
        # Signals still pending repeat a stop that has happened; unblocked,
        # they would reach the caller as a KeyboardInterrupt or a death.
        while signal.sigtimedwait(signals, 0) is not None:
            pass
        if old_sigchld == signal.SIG_IGN:
            signal.signal(signal.SIGCHLD, old_sigchld)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


class _Supervisor:
    """The parent's side: its workers, restart history and stop state."""

    def __init__(
        self,
        worker: Callable[[int], int],
        max_restarts: int,
        restart_window: float,
        stop_timeout: float | None,
        on_stopping: Callable[[], None] | None,
        signals: frozenset[signal.Signals],
    ) -> None:
        self._worker = worker
        self._signals = signals
        self._max_restarts = max_restarts
        self._restart_window = restart_window
        self._stop_timeout = stop_timeout
        self._on_stopping = on_stopping
        self._pid = os.getpid()
        # Looked up before forking, so a missing libc fails here, once.
        self._prctl = ctypes.CDLL(None, use_errno=True).prctl
        self._children: dict[int, int] = {}  # pid -> worker index
        self._restarts: collections.deque[float] = collections.deque()
        self._stopping = False
        self._killed = False
        self._deadline: float | None = None
        self._status = 0

    def run(self, count: int, on_ready: Callable[[], None] | None) -> int:
        for index in range(count):
            # A signal sent during a long start-up is seen between forks,
            # not once the last worker is up.
            while (info := signal.sigtimedwait(self._signals, 0)) is not None:
                self._dispatch(info)
            if self._stopping:
                break
            self._start(index)
        else:
            if on_ready is not None:
                _call_hook(on_ready, "on_ready")
        while self._children:
            if self._deadline is None:
                info = signal.sigwaitinfo(self._signals)
            else:
                remaining = max(0.0, self._deadline - time.monotonic())
                info = signal.sigtimedwait(self._signals, remaining)
            if info is None:
                self._kill_stragglers()
            else:
                self._dispatch(info)
        return self._status

    def _dispatch(self, info: signal.struct_siginfo) -> None:
        if info.si_signo == signal.SIGCHLD:
            self._reap()
        else:
            self._on_stop_signal(signal.Signals(info.si_signo))

    def kill_all(self) -> None:
        """SIGKILL and reap any workers left, when `run` did not finish."""
        # This runs while an exception propagates; it must not replace it,
        # even if a hook has reaped one of our workers behind our back.
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self._children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            del self._children[pid]

    def _start(self, index: int) -> None:
        # Output still buffered here would be copied into the worker and
        # written twice.
        _flush_output()
        pid = os.fork()
        if pid == 0:
            _run_worker(self._worker, index, self._pid, self._prctl, self._signals)
        self._children[pid] = index
        log.info("worker %d started (pid %d)", index, pid)

    def _reap(self) -> None:
        # One SIGCHLD may stand for several exits: the kernel does not queue
        # a second while the first is pending.
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self._children.pop(pid, None)
            if index is not None:  # else a hook's own subprocess
                self._exited(index, pid, os.waitstatus_to_exitcode(status))

    def _exited(self, index: int, pid: int, code: int) -> None:
        if self._stopping:
            # Killed by our own SIGTERM is a clean stop too: a worker still
            # starting up, before its handlers, had nothing to drain.
            clean = code in (0, -signal.SIGTERM) and not self._killed
            if not clean:
                self._status = 1
            # After stop_timeout's SIGKILL the warning has already been said.
            expected = clean or self._killed
            level = logging.DEBUG if expected else logging.WARNING
            log.log(level, "worker %d (pid %d) %s", index, pid, _describe(code))
            return
        log.warning("worker %d (pid %d) %s", index, pid, _describe(code))
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > self._restart_window:
            self._restarts.popleft()
        if len(self._restarts) >= self._max_restarts:
            log.error(
                "workers keep exiting: %d restarts in %g s; giving up",
                len(self._restarts),
                self._restart_window,
            )
            self._status = 1
            self._stop()
            return
        self._restarts.append(now)
        self._start(index)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if not self._stopping:
            log.info(
                "received %s; stopping %d workers (%s closes their "
                "connections at once)",
                sig.name,
                len(self._children),
                "a second SIGINT" if sig == signal.SIGINT else "SIGINT",
            )
            self._stop()
        elif sig == signal.SIGINT:
            log.info("received SIGINT while stopping; forwarding it to the workers")
            self._signal_all(signal.SIGINT)
        # A repeated SIGTERM is dropped: every worker has had one, and a
        # second could kill a worker that is past its handlers, draining.

    def _stop(self) -> None:
        self._stopping = True
        if self._stop_timeout is not None:
            self._deadline = time.monotonic() + self._stop_timeout
        if self._on_stopping is not None:
            _call_hook(self._on_stopping, "on_stopping")
        self._signal_all(signal.SIGTERM)

    def _kill_stragglers(self) -> None:
        log.warning(
            "%d worker(s) still running %g s after the stop signal; killing them",
            len(self._children),
            self._stop_timeout,
        )
        self._deadline = None
        self._killed = True
        self._status = 1
        self._signal_all(signal.SIGKILL)

    def _signal_all(self, sig: signal.Signals) -> None:
        # Safe from pid reuse: a pid stays here until waitpid has reaped it,
        # and until then the kernel keeps it for the exited worker.
        for pid in self._children:
            os.kill(pid, sig)


def _run_worker(
    worker: Callable[[int], int],
    index: int,
    parent_pid: int,
    prctl: Callable[..., int],
    signals: frozenset[signal.Signals],
) -> NoReturn:
    """The child's side of the fork: run ``worker`` and exit, whatever happens."""
    status = 1
    try:
        status = _exit_status(_worker_main(worker, index, parent_pid, prctl, signals))
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except KeyboardInterrupt:
        status = 128 + signal.SIGINT  # the shell's status for death by SIGINT
    except BaseException:
        log.exception("worker %d failed with an exception", index)
    finally:
        try:
            logging.shutdown()
            _flush_output()
        finally:
            os._exit(status)


def _worker_main(
    worker: Callable[[int], int],
    index: int,
    parent_pid: int,
    prctl: Callable[..., int],
    signals: frozenset[signal.Signals],
) -> object:
    # systemd would take a worker's READY=1 or STOPPING=1 for the service's.
    os.environ.pop("NOTIFY_SOCKET", None)
    # A group of its own: Ctrl-C in a terminal signals the foreground group,
    # and a worker must hear about it once, from the parent, not twice (the
    # terminal's SIGINT and the parent's SIGTERM), since a worker takes a
    # second SIGINT as "close every connection now".
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    # Had the parent died before prctl, no signal would come: we would
    # already belong to another process.
    if os.getppid() != parent_pid:
        return 1
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    _label_log_records(f"worker {index}: ")
    return worker(index)


def _label_log_records(label: str) -> None:
    """Start every log message of this process with ``label``."""
    # Workers share the parent's stderr (and journal), so an unlabelled line
    # could be any of them. A record factory reaches every logger and
    # handler, the application's too, without touching their formats.
    make_record = logging.getLogRecordFactory()

    def labelled(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.msg = f"{label}{record.msg}"
        return record

    logging.setLogRecordFactory(labelled)


def _exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` would exit with; like it, print a message."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _describe(code: int) -> str:
    """``code`` from `os.waitstatus_to_exitcode`, in words."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"was killed by {name}"


def _call_hook(hook: Callable[[], None], name: str) -> None:
    # A failed notification must not take down the workers it describes.
    try:
        hook()
    except Exception:
        log.exception("%s failed", name)


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        # None (no stream), closed, or its reader has gone away.
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
