"""Listening sockets: TCP and UDP on one or more hosts, and unix domain sockets.

Binding happens before the event loop starts (and, with several processes,
before the workers fork), so every failure a user can cause (a port in use,
an unknown host, a path that is not ours) becomes one `ListenError` whose
message says what went wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import socket
import stat
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from tornado.netutil import bind_sockets

from tornado_echo._logs import format_address
from tornado_echo.errors import Error

#: The unix socket file mode when none is given: only our own user may
#: connect (`tornado.netutil.bind_unix_socket` uses the same default).
DEFAULT_UNIX_MODE = 0o600

#: Hosts that mean "every interface, IPv4 and IPv6" (as ``None`` does).
ANY_HOSTS = frozenset({"", "::", "*"})


class ListenError(Error, OSError):
    """The server could not bind its address (port in use, unknown host, ...).

    Its text is the one sentence (``strerror``), without ``[Errno N]``;
    ``errno`` is still there for code that checks it.
    """

    def __str__(self) -> str:
        return str(self.strerror or super().__str__())


def bind(port: int, host: str | None) -> list[socket.socket]:
    """`.bind_sockets`, with failures turned into one readable `ListenError`.

    ``host`` ``None``, ``""``, ``"::"`` or ``"*"`` listens on every interface,
    IPv4 and IPv6 alike (one socket per family).
    """
    _check_port(port)
    if host in ANY_HOSTS:
        host = None
    try:
        return bind_sockets(port, host)
    except (OSError, UnicodeError) as exc:
        _close_abandoned(exc)
        raise _listen_error(exc, "", format_address((host or "*", port))) from exc


def _check_port(port: int) -> None:
    # getaddrinfo takes the port modulo 65536: 70000 would listen on 4464.
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be 0 to 65535, not {port!r}")


def _listen_error(exc: OSError | UnicodeError, what: str, where: str) -> ListenError:
    # UnicodeError: getaddrinfo's IDNA encoding rejects names like "a..b".
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return ListenError(
        getattr(exc, "errno", None), f"cannot listen{what} on {where}: {reason}"
    )


def _close_abandoned(exc: BaseException) -> None:
    # bind_sockets does not close the socket whose bind() failed, nor those
    # it had bound for the other address families; they are only in its
    # frame. Left to the garbage collector, each failed attempt (a retry
    # loop in an application) holds a descriptor and warns when collected.
    tb = exc.__traceback__
    while tb is not None:
        names = tb.tb_frame.f_locals
        if tb.tb_frame.f_code is bind_sockets.__code__:
            for sock in [names.get("sock"), *names.get("sockets", ())]:
                if isinstance(sock, socket.socket):
                    sock.close()
        tb = tb.tb_next


def bind_tcp(port: int, hosts: Sequence[str | None]) -> list[socket.socket]:
    """Listening sockets for ``port`` on each of ``hosts``.

    With port 0, the first host picks a free port and the others use the
    same one, so a client can reach the server at one port everywhere.
    """
    sockets: list[socket.socket] = []
    try:
        for host in hosts:
            bound = bind(port, host)
            sockets += bound
            if port == 0 and bound:
                port = bound[0].getsockname()[1]
    except ListenError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


# sun_path in <sys/un.h> is 108 bytes on Linux, the terminating NUL included.
_UNIX_PATH_MAX = 107


def bind_unix(
    path: str, mode: int = DEFAULT_UNIX_MODE, backlog: int = 128
) -> socket.socket:
    """A listening unix domain socket at ``path``, with file mode ``mode``.

    A stale socket file left by a server that died is replaced; anything
    else at ``path`` (a regular file, a directory, or a socket another
    server is listening on) is left alone and raises `ListenError`.
    """
    size = len(os.fsencode(path))
    if size > _UNIX_PATH_MAX:
        raise ListenError(
            errno.ENAMETOOLONG,
            f"cannot listen on {path}: the path is {size} bytes long, and a "
            f"unix socket's may be at most {_UNIX_PATH_MAX}; choose a shorter one",
        )
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask covers the moment between bind and chmod, when the file
    # would otherwise exist with wider permissions than asked for.
    old_umask = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        # "AF_UNIX path too long" has no errno, so no strerror either.
        raise _listen_error(exc, "", path) from exc
    finally:
        os.umask(old_umask)
    return sock


def bind_udp(port: int, hosts: Sequence[str | None]) -> list[socket.socket]:
    """Non-blocking UDP sockets for ``port`` on each of ``hosts``.

    ``None``, ``""``, ``"::"`` or ``"*"`` means every interface, IPv4 and
    IPv6 (one socket per family, as for `.bind_tcp`). With port 0, the first
    socket picks a free port and the others use the same one. Unlike
    `tornado.netutil.bind_sockets` (TCP only), ``SO_REUSEADDR`` stays off:
    on UDP it would let a second process bind the same port and take
    datagrams meant for this one. On failure every socket bound so far is
    closed and `.ListenError` says what went wrong in one sentence.
    """
    _check_port(port)
    sockets: list[socket.socket] = []
    where = ""
    try:
        for host in hosts:
            host = None if host in ANY_HOSTS else host
            where = format_address((host or "*", port))
            infos = socket.getaddrinfo(
                host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0, socket.AI_PASSIVE
            )
            for family, _, proto, _, sockaddr in sorted(
                set(infos), key=lambda info: info[0]
            ):
                # With port 0, every socket after the first reuses its port.
                sockaddr = (sockaddr[0], port, *sockaddr[2:])
                where = format_address(sockaddr)
                sock = _bind_one(family, proto, sockaddr, host)
                if sock is not None:
                    sockets.append(sock)
                    port = sock.getsockname()[1]
    except (OSError, UnicodeError) as exc:
        for sock in sockets:
            sock.close()
        raise _listen_error(exc, " for UDP", where) from exc
    return sockets


def _bind_one(
    family: socket.AddressFamily,
    proto: int,
    sockaddr: tuple[Any, ...],
    host: str | None,
) -> socket.socket | None:
    """One bound socket, or None where IPv6 is missing and that is expected."""
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT:
            return None  # a kernel without IPv6 still resolves "::"
        raise
    try:
        if family == socket.AF_INET6:
            # As bind_sockets does: IPv6 sockets take no IPv4, so 0.0.0.0 and
            # :: can both be bound, and a peer has one address form only.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        if (
            exc.errno == errno.EADDRNOTAVAIL
            and host == "localhost"
            and family == socket.AF_INET6
        ):
            # Docker's default network resolves localhost to ::1 as well but
            # cannot bind it; bind_sockets skips it there too.
            return None
        raise
    return sock


def _remove_stale_socket(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ListenError(
            exc.errno, f"cannot listen on {path}: {exc.strerror}"
        ) from exc
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(
            errno.EEXIST,
            f"cannot listen on {path}: it exists and is not a socket; "
            "remove it or choose another path",
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: a leftover of a dead server
        return
    except OSError as exc:
        raise ListenError(
            exc.errno, f"cannot listen on {path}: {exc.strerror}"
        ) from exc
    finally:
        probe.close()
    raise ListenError(
        errno.EADDRINUSE,
        f"cannot listen on {path}: another server is listening there",
    )


@contextlib.contextmanager
def listening(
    port: int | None,
    hosts: Sequence[str | None],
    unix: str | None = None,
    unix_mode: int = DEFAULT_UNIX_MODE,
    udp: bool = False,
) -> Iterator[list[socket.socket]]:
    """Bind everything asked for; on exit, close it and remove our socket file.

    ``port`` ``None`` means no TCP. With ``udp``, UDP sockets are bound on
    the same hosts and port as TCP. The unix socket file is removed only if
    it is still the one we created (same device and inode), never a file
    someone put there since.
    """
    sockets = bind_tcp(port, hosts) if port is not None else []
    ours: tuple[int, int] | None = None
    try:
        if udp and sockets:
            sockets += bind_udp(sockets[0].getsockname()[1], hosts)
        if unix is not None:
            sockets.append(bind_unix(unix, unix_mode))
            st = os.stat(unix)
            ours = (st.st_dev, st.st_ino)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
        if unix is not None and ours is not None:
            with contextlib.suppress(OSError):
                st = os.lstat(unix)
                if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == ours:
                    os.unlink(unix)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ListenOn:
    """Where a server listens: a value, checked when it is made.

    TCP on ``port`` at each of ``host`` (one host or several; ``""``,
    ``"::"``, ``"*"`` or ``None`` is every interface, IPv4 and IPv6; port 0
    picks a free one; ``port=None`` is no TCP), a unix domain socket at
    ``unix`` with file mode ``unix_mode``, and with ``udp`` RFC 862 UDP echo
    on the TCP port. `bind` binds them all::

        from tornado_echo.listen import ListenOn

        where = ListenOn(port=0, host=("127.0.0.1", "::1"))
        with where.bind() as sockets:
            print([s.getsockname()[1] for s in sockets])

    `.serve` takes one, or sockets that are already listening.

    .. versionadded:: 0.3.0
    """

    port: int | None = 10000
    host: str | None | Sequence[str] = "127.0.0.1"
    unix: str | None = None
    unix_mode: int = DEFAULT_UNIX_MODE
    udp: bool = False

    def __post_init__(self) -> None:
        port, host = self.port, self.host
        if port is not None:
            _check_port(port)
        if isinstance(host, Sequence) and not isinstance(host, str):
            # A tuple, whatever sequence was given: the value stays frozen.
            object.__setattr__(self, "host", tuple(host))
            if not all(isinstance(h, str) for h in host):
                raise TypeError(f"host must be a string or strings, not {host!r}")
        elif not (host is None or isinstance(host, str)):
            raise TypeError(f"host must be a string or strings, not {host!r}")
        if not (self.unix is None or isinstance(self.unix, str)):
            raise TypeError(f"unix must be a path string, not {self.unix!r}")
        mode = self.unix_mode
        if not (
            isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode <= 0o777
        ):
            raise ValueError(
                f"unix_mode must be a file mode from 0 to 0o777, not {mode!r}"
            )
        if not isinstance(self.udp, bool):
            raise TypeError(f"udp must be True or False, not {self.udp!r}")
        if self.udp and port is None:
            raise ValueError("udp needs a TCP port: UDP echo listens on the TCP port")
        if port is None and self.unix is None:
            raise ValueError("nothing to listen on: give a port, a unix path, or both")

    @property
    def hosts(self) -> list[str | None]:
        """``host`` as a list (every interface for an empty one)."""
        if self.host is None or isinstance(self.host, str):
            return [self.host]
        return list(self.host) or [None]

    def bind(self) -> AbstractContextManager[list[socket.socket]]:
        """Bind every socket (`ListenError` if one cannot be); closed on exit.

        On exit the unix socket file is removed too, if it is still ours.
        """
        return listening(self.port, self.hosts, self.unix, self.unix_mode, self.udp)


def describe(sock: socket.socket) -> str:
    """Where ``sock`` listens, for the ``listening on`` log line."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return format_address(name) if name else "unix (unnamed)"
    if sock.type == socket.SOCK_DGRAM:
        return f"{format_address(name)} (UDP)"
    return format_address(name)
