"""What an echo server says back: sans-IO echo protocols for both drivers.

`.EchoServer` (on `.IOStream`) and `.RawEchoServer` (on raw fd handlers) do
the I/O; an *echo* (an `Echo` object) decides what to send back. It is a plain
object, with no Tornado import: the driver feeds it every chunk it reads
(``b""`` at end of input) and sends whatever it returns; once
`~Echo.finished` is true the driver sends that last answer and
closes. Both drivers run the same echo objects, so the byte echo and
the line echo behave the same on either.

>>> proto = LineEcho("127.0.0.1:5000", max_line_length=4, on_long_line="reply")
>>> proto.receive_data(b"ab\\ntoo long\\ncd")
b'ab\\nERROR line too long\\n'
>>> proto.receive_data(b"")
b'cd'
>>> proto.finished
True

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Protocol

# LONG_LINE_POLICIES is imported from here by code written before the
# policy moved to `tornado_echo.lines`, its one home.
from tornado_echo.lines import (  # noqa: F401
    DEFAULT_MAX_LINE_LENGTH,
    LONG_LINE_POLICIES,
    LONG_LINE_REPLY,
    NEED_DATA,
    EndOfInput,
    Line,
    LineFramer,
    LineTooLong,
    LongLinePolicy,
    check_long_line_policy,
    log_line_too_long,
)


class Echo(Protocol):
    """What the drivers ask of an echo: `ByteEcho` and `LineEcho` are two.

    .. versionchanged:: 0.3.0
       Was ``EchoProtocol``; that name still works, with a warning.
    """

    @property
    def finished(self) -> bool:
        """True once the connection should close after the last answer."""
        ...

    def receive_data(self, data: bytes) -> bytes:
        """Take received bytes (``b""`` at EOF); return the bytes to send."""
        ...


#: Builds one `Echo` per connection, given the peer as ``host:port``:
#: `ByteEcho`, `LineEcho`, a `functools.partial` of one, or your own.
#: (Was ``ProtocolFactory``; that name still works, with a warning.)
EchoFactory = Callable[[str], Echo]

_RENAMED = {"EchoProtocol": "Echo", "ProtocolFactory": "EchoFactory"}


def __getattr__(name: str) -> Any:
    new = _RENAMED.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"tornado_echo.echo.{name} is now {new}", DeprecationWarning, stacklevel=2
    )
    return globals()[new]


class ByteEcho:
    """RFC 862: every byte back, as it arrives, until the client's EOF.

    >>> echo = ByteEcho("127.0.0.1:5000")
    >>> echo.receive_data(b"hello")
    b'hello'
    >>> echo.receive_data(b"")
    b''
    >>> echo.finished
    True

    .. versionadded:: 0.2.0
    """

    __slots__ = ("finished",)

    def __init__(self, peer: str = "") -> None:
        self.finished = False

    def receive_data(self, data: bytes) -> bytes:
        if not data:
            self.finished = True
        return data


class LineEcho:
    r"""Echo complete lines, and the unterminated tail at EOF, as received.

    Overlong lines follow ``on_long_line``: ``close`` (never echoed; the
    connection closes after what is owed), ``skip`` (dropped, still in sync)
    or ``reply`` (an error line, then as ``skip``). Each is logged once at
    INFO with the peer.

    >>> echo = LineEcho(delimiter=b"\r\n", max_line_length=3, on_long_line="skip")
    >>> echo.receive_data(b"one\r\nlonger\r\ntwo\r")
    b'one\r\n'
    >>> echo.receive_data(b"\n")
    b'two\r\n'
    >>> echo.lines, echo.lines_too_long
    (2, 1)

    .. versionadded:: 0.2.0
    """

    __slots__ = (
        "_framer",
        "_peer",
        "_whole_lines_max",
        "finished",
        "lines",
        "lines_too_long",
        "on_long_line",
    )

    def __init__(
        self,
        peer: str = "",
        *,
        delimiter: bytes = b"\n",
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        on_long_line: LongLinePolicy = "close",
    ) -> None:
        self._framer = LineFramer(delimiter, max_line_length)
        self._peer = peer
        self.on_long_line = check_long_line_policy(on_long_line)
        self.finished = False
        #: Lines echoed so far (for stats).
        self.lines = 0
        #: Overlong lines refused so far (for stats).
        self.lines_too_long = 0
        # A chunk no longer than this that ends with the delimiter, arriving
        # while the framer holds nothing, is whole lines within the cap, and
        # their echo is the chunk itself: the framer has nothing to add.
        # That needs a delimiter that cannot overlap itself (b"aa" can:
        # b"aaa" ends with it but is one line and a partial one).
        overlaps = any(
            delimiter[:k] == delimiter[-k:] for k in range(1, len(delimiter))
        )
        self._whole_lines_max = 0 if overlaps else max_line_length + len(delimiter)

    def receive_data(self, data: bytes) -> bytes:
        framer = self._framer
        if (
            len(data) <= self._whole_lines_max
            and data.endswith(framer.delimiter)
            and framer.idle
            and not self.finished
        ):
            self.lines += data.count(framer.delimiter)
            return data
        if not self.finished:
            # Many lines, or a line completed across reads: one slice.
            whole = framer.receive_lines(data)
            if whole is not None:
                self.lines += whole[1]
                return whole[0]
        else:
            framer.receive_data(data)
        out = bytearray()
        while not self.finished and (event := framer.next_event()) is not NEED_DATA:
            if isinstance(event, Line):
                # A framed line cannot contain the delimiter, so appending it
                # reproduces the input exactly.
                out += event.data
                out += framer.delimiter
                self.lines += 1
            elif isinstance(event, LineTooLong):
                self.lines_too_long += 1
                log_line_too_long(self._peer, event, self.on_long_line)
                if self.on_long_line == "close":
                    self.finished = True
                elif self.on_long_line == "reply":
                    out += framer.frame(LONG_LINE_REPLY)
            elif isinstance(event, EndOfInput):
                out += event.tail
                self.finished = True
        return bytes(out)
