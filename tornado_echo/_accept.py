"""`Acceptor`: accept connections on listening sockets, calmly under pressure.

Both drivers accept through it. Tornado's own accept handler
(`tornado.netutil.add_accept_handler`) re-raises EMFILE: the listener stays
readable, so the loop calls it again at once, and the server spins a core
while logging a traceback per attempt. Here, running out of descriptors or
memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) stops accepting for a moment that
doubles while the condition lasts (up to a second), with one WARNING when
it starts and one INFO line when accepting works again.

The acceptor can also be paused, for as long as any reason holds: the
connection cap pauses it until a slot frees, so new clients wait in the
kernel's listen backlog instead of being accepted and dropped.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterable
from typing import Any

from tornado.ioloop import IOLoop

from tornado_echo._logs import conn_log, format_address, log_connection_error

__all__ = ["RESOURCE_ERRORS", "Acceptor"]

#: ``accept`` errors that mean "not now" (out of descriptors or memory), not
#: "never": they clear when connections close.
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# The first pause after a resource error, and the longest: short enough to
# recover quickly, long enough that a stuck condition costs nothing.
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 1.0

_BACKOFF = "backoff"


class Acceptor:
    """Accepts on a set of listening sockets and hands each connection on.

    ``on_connection(sock, address)`` is called for every accepted socket;
    an exception from it closes that socket and is logged, and accepting
    goes on. At most ``per_event`` connections are accepted per readiness
    event, so one busy listener cannot starve established connections.
    """

    def __init__(
        self,
        on_connection: Callable[[socket.socket, Any], None],
        *,
        per_event: int = 128,
    ) -> None:
        self._on_connection = on_connection
        self._per_event = per_event
        self._listeners: list[socket.socket] = []
        self._io_loop: IOLoop | None = None
        self._paused: set[str] = set()
        self._registered = False
        self._backoff = _FIRST_BACKOFF
        self._failed_attempts = 0
        #: Episodes of resource errors so far.
        self.error_episodes = 0

    def add(self, sockets: Iterable[socket.socket]) -> None:
        """Start accepting on ``sockets`` (call inside the running loop)."""
        self._io_loop = IOLoop.current()
        for sock in sockets:
            sock.setblocking(False)
            self._listeners.append(sock)
            if self._registered:
                self._io_loop.add_handler(sock, self._on_readable, IOLoop.READ)
        self._update()

    def close(self) -> None:
        """Stop accepting for good and close the listeners."""
        self._paused.add("closed")
        self._update()
        for sock in self._listeners:
            sock.close()
        self._listeners.clear()

    def pause(self, reason: str) -> None:
        """Stop accepting until `resume` is called with the same ``reason``."""
        self._paused.add(reason)
        self._update()

    def resume(self, reason: str) -> None:
        """Withdraw one reason to pause; accepting restarts when none is left."""
        self._paused.discard(reason)
        self._update()

    def _update(self) -> None:
        want = not self._paused and bool(self._listeners)
        if want == self._registered or self._io_loop is None:
            return
        for sock in self._listeners:
            if want:
                self._io_loop.add_handler(sock, self._on_readable, IOLoop.READ)
            else:
                self._io_loop.remove_handler(sock)
        self._registered = want

    def _on_readable(self, listener: socket.socket, events: int) -> None:
        for _ in range(self._per_event):
            if self._paused:
                return  # paused by the previous connection (the cap)
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                if self._failed_attempts:
                    # The backlog is empty: the episode is over. Not before:
                    # catching up on it may well run out of fds once more.
                    conn_log.info(
                        "accepting again after %d failed attempt(s)",
                        self._failed_attempts,
                    )
                    self._failed_attempts = 0
                return
            except ConnectionAbortedError:
                continue  # the client gave up while waiting in the backlog
            except OSError as exc:
                if exc.errno in RESOURCE_ERRORS:
                    self._back_off(listener, exc)
                else:
                    log_connection_error(listener.getsockname(), exc)
                return
            self._backoff = _FIRST_BACKOFF
            try:
                self._on_connection(sock, address)
            except Exception as exc:  # noqa: BLE001 - one bad socket must not stop accepts
                sock.close()
                log_connection_error(address, exc)

    def _back_off(self, listener: socket.socket, exc: OSError) -> None:
        if not self._failed_attempts:
            self.error_episodes += 1
            conn_log.warning(
                "cannot accept on %s: %s; retrying with backoff up to %gs",
                format_address(listener.getsockname()),
                exc.strerror,
                _MAX_BACKOFF,
            )
        self._failed_attempts += 1
        self.pause(_BACKOFF)
        assert self._io_loop is not None
        self._io_loop.call_later(self._backoff, self.resume, _BACKOFF)
        self._backoff = min(2 * self._backoff, _MAX_BACKOFF)
