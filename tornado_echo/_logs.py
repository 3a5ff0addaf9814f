"""How connection events are logged: the peer's address, and no tracebacks
for ordinary network weather.

Every driver logs through these helpers, so a reset looks the same whether
`.EchoServer`, `.LineServer` or `.RawEchoServer` saw it.
"""

from __future__ import annotations

import errno
import logging
import ssl
from typing import Any

from tornado.iostream import StreamClosedError
from tornado.log import app_log, enable_pretty_logging

__all__ = [
    "conn_log",
    "format_address",
    "is_peer_gone",
    "log_connection_error",
    "log_to_stderr",
]

#: Logger for per-connection events (connects, resets, limits, timeouts).
conn_log = logging.getLogger("tornado_echo.connection")

# errnos that mean "the peer went away"; they are ordinary network weather,
# not bugs, so they are logged at DEBUG without a traceback.
_PEER_GONE = frozenset(
    {
        errno.ECONNRESET,
        errno.EPIPE,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.ENOTCONN,
        errno.ESHUTDOWN,
    }
)


def is_peer_gone(exc: BaseException) -> bool:
    """True if ``exc`` only says that the peer went away (EOF, reset, TLS abort).

    These are ordinary network conditions, not bugs, so they are logged
    without a traceback.

    >>> is_peer_gone(ConnectionResetError(errno.ECONNRESET, "reset by peer"))
    True
    >>> is_peer_gone(StreamClosedError())  # a clean EOF
    True
    >>> is_peer_gone(KeyError("bug"))
    False
    """
    if isinstance(exc, StreamClosedError):
        return exc.real_error is None or is_peer_gone(exc.real_error)
    if isinstance(exc, ssl.SSLError):
        return True
    return isinstance(exc, OSError) and exc.errno in _PEER_GONE


def log_connection_error(address: Any, exc: BaseException) -> None:
    """Log why a connection ended abnormally, at the level it deserves.

    A reset or broken pipe is one DEBUG line; anything else is a bug in a
    handler and is logged once, with its traceback, on ``tornado.application``.
    """
    if is_peer_gone(exc):
        if isinstance(exc, StreamClosedError):
            exc = exc.real_error or exc
        conn_log.debug("%s: connection ended: %s", format_address(address), exc)
    else:
        app_log.error(
            "Uncaught exception serving %s", format_address(address), exc_info=exc
        )


def format_address(address: Any) -> str:
    r"""``host:port`` for an IP peer, the path (or ``unix``) for a unix socket.

    >>> format_address(("192.0.2.1", 5000))
    '192.0.2.1:5000'
    >>> format_address(("2001:db8::1", 5000, 0, 0))
    '[2001:db8::1]:5000'
    >>> format_address("/run/echo.sock"), format_address("")
    ('/run/echo.sock', 'unix')
    >>> format_address(b"\0echo")  # the abstract namespace
    '@echo'
    """
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    if isinstance(address, bytes):  # a unix socket in the abstract namespace
        address = address.decode("utf-8", "replace").replace("\0", "@", 1)
    return str(address) or "unix"


def log_to_stderr(level: int | str) -> None:
    """Every logger's records on stderr at ``level`` and above, in Tornado's format."""
    root = logging.getLogger()
    enable_pretty_logging(logger=root)
    root.setLevel(level)
