"""systemd socket activation and readiness notification, without libsystemd.

With *socket activation*, systemd opens the listening sockets itself (from a
``.socket`` unit) and starts the service with them as file descriptors 3,
4, ..., described by ``LISTEN_PID``, ``LISTEN_FDS`` and ``LISTEN_FDNAMES``.
The port is open before the service starts, and connections wait in its
backlog while the service restarts. *Readiness notification* is how a
``Type=notify`` service tells systemd that it has started (``READY=1``) or
is stopping (``STOPPING=1``): a datagram to the socket in ``NOTIFY_SOCKET``.

``tornado-echo`` does both: when `listen_fds` finds inherited sockets it
serves on them instead of binding ``--port``, and it sends ``READY=1`` once
it is listening and ``STOPPING=1`` when shutdown begins. A server of your
own can do the same::

    sockets = [sock for name, sock in listen_fds()]
    if sockets:
        server.add_sockets(sockets)
    else:
        server.listen(7007)
    notify("READY=1")

``examples/systemd/`` has units that run ``tornado-echo`` this way.
"""

from __future__ import annotations

import errno
import logging
import os
import socket

from tornado_echo.errors import Error

__all__ = ["ActivationError", "listen_fds", "notify"]

log = logging.getLogger("tornado_echo")

#: ``SD_LISTEN_FDS_START``: 0-2 are stdin, stdout and stderr.
_FIRST_FD = 3

#: The name systemd documents for a socket without ``FileDescriptorName=``.
_UNNAMED = "unknown"

#: ``LISTEN_PIDFDID`` is what newer systemd adds to guard against pid reuse;
#: we do not check it, but a child must not inherit it either.
_LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID")

#: How long `notify` waits for room in the receiver's queue. systemd reads
#: its notification socket promptly, so a full queue means it is stuck, and
#: we would rather log a warning than stall the event loop behind it.
_NOTIFY_TIMEOUT = 1.0

_KINDS = {
    socket.SOCK_DGRAM: "a datagram socket",
    socket.SOCK_SEQPACKET: "a sequential-packet socket",
}


class ActivationError(Error, ValueError):
    """systemd passed sockets we cannot serve on (one sentence saying what to fix)."""


def listen_fds(*, unset_environment: bool = True) -> list[tuple[str, socket.socket]]:
    """Sockets passed by systemd socket activation, as (name, socket) pairs, in fd order.

    Like ``sd_listen_fds_with_names(3)``: the sockets start at fd 3, and are
    for this process only if ``LISTEN_PID`` is its pid and ``LISTEN_FDS`` is
    set; otherwise the result is empty. Names come from ``LISTEN_FDNAMES``
    (``FileDescriptorName=``), or are ``"unknown"`` without it. Each socket
    is non-blocking and close-on-exec, and belongs to the caller.

    With ``unset_environment`` (the default) the ``LISTEN_*`` variables are
    removed, even when the result is empty or an error is raised, so that
    processes started later do not take the sockets for theirs.

    Raises `ActivationError` if the variables are malformed, or if a socket
    is not a listening stream socket (use ``ListenStream=`` with
    ``Accept=no``); the descriptors are then left open, as found.

    .. versionadded:: 0.3.0
    """
    try:
        names = _passed_names()
    finally:
        if unset_environment:
            for variable in _LISTEN_VARIABLES:
                os.environ.pop(variable, None)
    return _adopt(names)


def notify(*states: str) -> bool:
    """Send sd_notify state lines (``READY=1``, ``STATUS=...``) to ``$NOTIFY_SOCKET``.

    The states go, one per line, in one datagram to the ``AF_UNIX`` socket
    named by ``NOTIFY_SOCKET`` (a leading ``@`` means the abstract
    namespace). Returns True once sent, and False if not under systemd
    (``NOTIFY_SOCKET`` unset or empty). A failure to send never raises: it
    logs one WARNING and returns False.

    ``NOTIFY_SOCKET`` is left set, so that ``STOPPING=1`` can follow
    ``READY=1``; a process that forks workers should remove it from theirs,
    or systemd may take a worker's notification for the service's.

    .. versionadded:: 0.3.0
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
        ) as sock:
            sock.settimeout(_NOTIFY_TIMEOUT)
            sock.sendto("\n".join(states).encode("utf-8"), target)
    except OSError as e:
        log.warning("could not notify systemd at %s: %s", address, e)
        return False
    return True


def _passed_names() -> list[str]:
    """The names of the sockets passed to this process, one per fd from 3."""
    pid = os.environ.get("LISTEN_PID")
    if pid is None:
        return []
    if _positive(pid) is None:
        raise ActivationError(
            f"LISTEN_PID={pid!r} is not a process id; only systemd or another "
            "socket activator should set it, to the pid of the process it starts."
        )
    # An activated process that starts children without unsetting the
    # variables hands them on; the sockets are still only the parent's.
    if int(pid) != os.getpid():
        return []
    fds = os.environ.get("LISTEN_FDS")
    if fds is None:
        return []
    count = _positive(fds)
    if count is None:
        raise ActivationError(
            f"LISTEN_FDS={fds!r} is not a positive number of sockets; only systemd "
            "or another socket activator should set it, to how many it passed."
        )
    text = os.environ.get("LISTEN_FDNAMES")
    if text is None:
        return [_UNNAMED] * count
    names = text.split(":") if text else []
    if len(names) != count:
        raise ActivationError(
            f"LISTEN_FDNAMES={text!r} has {len(names)} name(s) for {count} "
            "socket(s); give the activator exactly one name per socket."
        )
    return names


def _positive(text: str) -> int | None:
    # Stricter than int(), which would also take " 3", "+3", "3_0" and
    # non-ASCII digits.
    if text.isascii() and text.isdigit() and int(text) > 0:
        return int(text)
    return None


def _adopt(names: list[str]) -> list[tuple[str, socket.socket]]:
    fds = range(_FIRST_FD, _FIRST_FD + len(names))
    for fd in fds:
        # Before anything can fail, as sd_listen_fds does: a process we
        # start must not inherit the listening sockets either way.
        try:
            os.set_inheritable(fd, False)
        except OSError:
            raise ActivationError(
                f"LISTEN_FDS={len(names)} but fd {fd} is not open; the activator "
                f"must pass that many sockets, from fd {_FIRST_FD} on."
            ) from None
    adopted: list[tuple[str, socket.socket]] = []
    try:
        for fd, name in zip(fds, names):
            adopted.append((name, _listening_socket(fd, name)))
    except BaseException:
        # The caller never sees these objects: detach them, so that they do
        # not close the descriptors when collected.
        for _, sock in adopted:
            sock.detach()
        raise
    return adopted


def _listening_socket(fd: int, name: str) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)  # detects family, type and protocol
    except OSError as e:
        what = "it is not a socket" if e.errno == errno.ENOTSOCK else str(e)
        raise ActivationError(_not_listening(fd, name, what)) from None
    try:
        problem = _problem(sock)
        if problem is not None:
            raise ActivationError(_not_listening(fd, name, problem))
    except BaseException:
        sock.detach()  # leave the descriptor open, as we found it
        raise
    sock.setblocking(False)
    return sock


def _problem(sock: socket.socket) -> str | None:
    """What ``sock`` is, if not a listening stream socket; None if it is one."""
    if sock.type != socket.SOCK_STREAM:
        kind = _KINDS.get(
            sock.type, f"a {getattr(sock.type, 'name', sock.type)} socket"
        )
        return f"it is {kind}"
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return None
    try:
        sock.getpeername()
    except OSError:
        return "it is a stream socket that is not listening"
    return "it is a connected stream socket, as Accept=yes passes"


def _not_listening(fd: int, name: str, problem: str) -> str:
    return (
        f"socket-activated fd {fd} ({name!r}) is not a listening stream socket "
        f"({problem}); use ListenStream= with Accept=no in the .socket unit."
    )
