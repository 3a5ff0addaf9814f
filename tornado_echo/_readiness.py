"""A socket error that the event loop reports only once.

On asyncio's own loop an fd stays in its level-triggered epoll set, so a
reset keeps the socket readable until someone reads the error. uvloop (and
libuv under it) treats ``POLLERR`` as fatal for the fd's watcher instead:
it runs the reader (and the writer) once more, then stops polling that fd
for good, whatever interest is registered. If that last ``recv`` returns
bytes that were queued before the reset, no ``recv`` or ``send`` ever
fails, and a connection whose data produced no reply (a partial line, a
partial PROXY header) would wait for an event that never comes, holding
its file descriptor and its slot until a timeout.

So every driver keeps one rule: after a read that returned data, if no
``send`` follows before it waits for readiness again, it asks the socket
for a pending error (``SO_ERROR``, which a reset sets and only a failed
call or this question clears). A ``send`` needs no such check: it fails
by itself on a reset socket. The echo's hot path always sends, so it
never pays for the check.
"""

from __future__ import annotations

import os
import socket


def pending_error(sock: socket.socket) -> OSError | None:
    """The error waiting on ``sock`` (a reset, say), or None; clears it.

    >>> a, b = socket.socketpair()
    >>> pending_error(a) is None
    True
    >>> a.close(); b.close()
    """
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if not code:
        return None
    return OSError(code, os.strerror(code))


def raise_pending_error(sock: socket.socket) -> None:
    """Raise the error waiting on ``sock``, if there is one."""
    error = pending_error(sock)
    if error is not None:
        raise error
