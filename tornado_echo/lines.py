r"""A sans-IO line framer: bytes in, events out.

`LineFramer` turns a byte stream into delimiter-terminated lines without
doing any I/O itself, in the style of `h11 <https://h11.readthedocs.io/>`_.
The caller owns the socket (or stream, or test fixture): it hands every
chunk it reads to `LineFramer.receive_data` and then calls
`LineFramer.next_event` until it returns `NEED_DATA`. Because the framer
never touches the network, a clock or an event loop, it behaves the same
however the input is split into chunks, and it can be tested exhaustively
with plain byte strings.

>>> framer = LineFramer(delimiter=b"\r\n", max_line_length=8)
>>> framer.receive_data(b"set k 5\r\nhel")
>>> framer.next_event()
Line(data=b'set k 5')
>>> framer.read_exactly(5 + 2)
>>> framer.next_event()
NEED_DATA
>>> framer.receive_data(b"lo\r\nget k\r\nmuch too long\r\nq")
>>> framer.next_event()
RawData(data=b'hello\r\n')
>>> framer.next_event()
Line(data=b'get k')
>>> framer.next_event()
LineTooLong(limit=8)
>>> framer.next_event()
NEED_DATA
>>> framer.receive_data(b"")
>>> framer.next_event()
EndOfInput(tail=b'q')
>>> framer.frame(b"ok")
b'ok\r\n'

A typical read loop::

    while True:
        data = await receive()  # b"" once the peer has closed
        framer.receive_data(data)
        while (event := framer.next_event()) is not NEED_DATA:
            handle(event)
        if not data:
            break

The framer holds at most about ``max_line_length + len(delimiter)`` bytes
plus one chunk, provided the caller drains events after every
`~LineFramer.receive_data` call; a peer that never sends a delimiter cannot
make it grow. Blocks requested with `~LineFramer.read_exactly` are exempt,
since their size is chosen by the caller.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, get_args

__all__ = [
    "DEFAULT_MAX_LINE_LENGTH",
    "LONG_LINE_POLICIES",
    "LONG_LINE_REPLY",
    "NEED_DATA",
    "EndOfInput",
    "Event",
    "Line",
    "LineFramer",
    "LineTooLong",
    "LongLinePolicy",
    "RawData",
    "check_long_line_policy",
    "log_line_too_long",
]

DEFAULT_MAX_LINE_LENGTH: Final = 65536

#: What happens to a line longer than ``max_line_length``: ``close`` the
#: connection (the line is never handled), ``skip`` it, or ``reply`` with an
#: error line and go on. `.LineEcho` and `.LineServer` both follow it.
LongLinePolicy: TypeAlias = Literal["close", "skip", "reply"]
#: The policies, in the order the CLI lists them.
LONG_LINE_POLICIES: Final[tuple[str, ...]] = get_args(LongLinePolicy)

#: The error line the ``reply`` policy sends by default.
LONG_LINE_REPLY: Final = b"ERROR line too long"

log = logging.getLogger("tornado_echo.lines")


def check_long_line_policy(policy: object) -> LongLinePolicy:
    """``policy``, if it is one of `LONG_LINE_POLICIES`; a `ValueError` if not.

    >>> check_long_line_policy("drop")
    Traceback (most recent call last):
      ...
    ValueError: on_long_line must be one of close, skip, reply, not 'drop'

    .. versionadded:: 0.3.0
    """
    if policy == "close" or policy == "skip" or policy == "reply":
        return policy
    raise ValueError(
        f"on_long_line must be one of {', '.join(LONG_LINE_POLICIES)}, not {policy!r}"
    )


def log_line_too_long(peer: str, event: LineTooLong, policy: LongLinePolicy) -> None:
    """The one INFO line for an overlong line, whoever applies the policy.

    .. versionadded:: 0.3.0
    """
    log.info("%s: line longer than %d bytes (policy: %s)", peer, event.limit, policy)


# Consumed bytes are only dropped from the front of the buffer once they
# make up at least half of it, so each compaction copies no more bytes than
# were consumed since the previous one and total work stays linear; below
# this size a copy is not worth making at all.
_COMPACT_MIN: Final = 4096


class _NeedData(enum.Enum):
    # A one-member enum, so that type checkers narrow ``x is NEED_DATA``.
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"

    __str__ = __repr__


NEED_DATA: Final = _NeedData.NEED_DATA
"""Returned by `LineFramer.next_event` when more input is needed."""


@dataclass(frozen=True, slots=True)
class Line:
    """A complete line, without its delimiter.

    .. versionadded:: 0.2.0
    """

    data: bytes


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """A line exceeded ``max_line_length``; its bytes are discarded.

    Reported once per overlong line, as soon as the overflow is certain
    rather than when its delimiter arrives, which may be never.

    .. versionadded:: 0.2.0
    """

    limit: int


@dataclass(frozen=True, slots=True)
class RawData:
    """The block requested with `LineFramer.read_exactly`.

    .. versionadded:: 0.2.0
    """

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfInput:
    """The input ended; ``tail`` holds any unterminated bytes left over.

    ``tail`` is ``b""`` when the input ended on a delimiter or while an
    overlong line was being discarded. During a pending
    `LineFramer.read_exactly` it is the partial block.

    .. versionadded:: 0.2.0
    """

    tail: bytes


Event: TypeAlias = Line | LineTooLong | RawData | EndOfInput


class LineFramer:
    """Splits a byte stream into lines ending with ``delimiter``.

    ``delimiter`` is any non-empty byte string. A line may hold at most
    ``max_line_length`` bytes, not counting the delimiter; longer lines are
    reported as `LineTooLong` and skipped up to and including their
    delimiter, so framing stays in sync with the stream.

    .. versionadded:: 0.2.0
    """

    __slots__ = (
        "_buf",
        "_delimiter",
        "_discarding",
        "_dlen",
        "_eof",
        "_finished",
        "_max_line_length",
        "_overlaps",
        "_raw_pending",
        "_search_from",
        "_single",
        "_single_max",
        "_start",
    )

    def __init__(
        self,
        delimiter: bytes = b"\n",
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
    ) -> None:
        if not isinstance(delimiter, bytes) or not delimiter:
            raise ValueError(
                f"delimiter must be a non-empty bytes object, not {delimiter!r}"
            )
        if (
            not isinstance(max_line_length, int)
            or isinstance(max_line_length, bool)
            or max_line_length < 1
        ):
            raise ValueError(
                f"max_line_length must be an int >= 1, not {max_line_length!r}"
            )
        self._delimiter = delimiter
        self._dlen = len(delimiter)
        self._max_line_length = max_line_length
        self._single_max = max_line_length + len(delimiter)
        self._buf = bytearray()
        # Consumed bytes stay in front of _start until _compact drops them in
        # bulk, so taking one line never copies the rest of the buffer.
        self._start = 0
        # Where the next delimiter search resumes, so no byte is rescanned
        # except the last len(delimiter) - 1, which may begin a delimiter
        # completed by the next chunk.
        self._search_from = 0
        self._discarding = False
        self._raw_pending: int | None = None
        self._eof = False
        self._finished = False
        # A chunk that arrived while the framer was empty and holds exactly
        # one line within the cap (one delimiter, at its end) is kept as is,
        # not copied into the buffer and searched again: the usual case for
        # a request/reply protocol, where each read is one line.
        self._single: bytes | None = None
        # A delimiter that can overlap itself (b"aa" in b"aaa") makes where a
        # line ends depend on how the search runs; `receive_lines` leaves
        # such delimiters to the event path.
        self._overlaps = any(
            delimiter[:k] == delimiter[-k:] for k in range(1, len(delimiter))
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(delimiter={self._delimiter!r}, "
            f"max_line_length={self._max_line_length!r})"
        )

    @property
    def delimiter(self) -> bytes:
        """The byte string that ends each line."""
        return self._delimiter

    @property
    def max_line_length(self) -> int:
        """The longest accepted line, in bytes, not counting the delimiter."""
        return self._max_line_length

    @property
    def idle(self) -> bool:
        """True if the framer holds no bytes and is in its initial state.

        The next byte it receives then starts a new line.
        """
        return (
            self._start == len(self._buf)
            and self._single is None
            and not self._discarding
            and self._raw_pending is None
            and not self._eof
        )

    @property
    def buffered(self) -> int:
        """The number of bytes received but not yet returned or discarded."""
        single = 0 if self._single is None else len(self._single)
        return len(self._buf) - self._start + single

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feeds received bytes to the framer; ``b""`` means end of input.

        Raises `RuntimeError` if the end of input was already received.
        """
        if self._eof:
            raise RuntimeError("cannot receive data after the end of input")
        if data.__class__ is bytes:
            if (
                len(data) <= self._single_max
                and self.idle
                and 0 <= data.find(self._delimiter) == len(data) - self._dlen
            ):
                self._single = data
                return
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be a bytes-like object, not {data!r}")
        if not data:
            self._eof = True
            return
        if self._single is not None:
            self._unstash()
        self._compact()
        self._buf += data
        if self._discarding:
            # Discarding yields no event, so doing it now keeps an endless
            # overlong line bounded even if the caller feeds several chunks
            # between calls to next_event.
            self._discard()

    def receive_lines(self, data: bytes) -> tuple[bytes, int] | None:
        r"""Feeds ``data`` and takes every line it completes, in one piece.

        For a consumer that wants many lines' bytes at once, an echo say:
        one split at C speed instead of an event per line. If the framer is
        reading lines (no `read_exactly` pending, no overlong line being
        discarded, input not ended), ``data`` completes at least one line,
        and every line it completes and the unterminated rest are within
        ``max_line_length``, returns those lines exactly as received,
        delimiters included, and how many there are; the rest stays
        buffered, and `next_event` does not return them again. Otherwise
        returns None, having fed ``data`` as `receive_data` does: then drain
        `next_event` as usual.

        >>> framer = LineFramer(b"\n", max_line_length=5)
        >>> framer.receive_lines(b"ab\ncd\nef")
        (b'ab\ncd\n', 2)
        >>> framer.receive_lines(b"g\nh")
        (b'efg\n', 1)
        >>> framer.receive_lines(b"ijklmnop\n") is None  # too long: events
        True
        >>> framer.next_event()
        LineTooLong(limit=5)
        """
        if (
            data.__class__ is not bytes
            or not data
            or self._overlaps
            or self._eof
            or self._discarding
            or self._raw_pending is not None
            or self._single is not None
        ):
            self.receive_data(data)
            return None
        buf, start = self._buf, self._start
        combined = bytes(buf[start:]) + data if start < len(buf) else data
        parts = combined.split(self._delimiter)
        if len(parts) == 1 or max(map(len, parts)) > self._max_line_length:
            self.receive_data(data)
            return None
        rest = parts[-1]
        buf.clear()
        buf += rest
        self._start = 0
        self._search_from = max(0, len(rest) - self._dlen + 1)
        return combined[: len(combined) - len(rest)], len(parts) - 1

    def next_event(self) -> Event | Literal[_NeedData.NEED_DATA]:
        """Returns the next event, or `NEED_DATA` if more input is needed.

        After `EndOfInput` has been returned, returns `NEED_DATA` forever.
        """
        if self._single is not None:
            line = self._single[: -self._dlen]
            self._single = None
            return Line(line)
        if (
            self._start == len(self._buf)
            and not self._eof
            and self._raw_pending is None
        ):
            # Nothing to frame: the common question right after a line.
            return NEED_DATA
        if self._finished:
            return NEED_DATA
        if self._discarding and not self._discard():
            if self._eof:
                return self._end(b"")
            return NEED_DATA
        if self._raw_pending is not None:
            return self._next_raw(self._raw_pending)
        return self._next_line()

    def read_exactly(self, n: int) -> None:
        """Makes the next event `RawData` holding exactly ``n`` bytes.

        The block starts right after the last event returned (after the end
        of the overlong line, if one is being discarded). Once it has been
        returned the framer goes back to reading lines. If the input ends
        first, `EndOfInput` carries the partial block as its ``tail``.

        Raises `ValueError` if ``n`` is negative and `RuntimeError` if a
        previous ``read_exactly`` is still pending.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n must be an int >= 0, not {n!r}")
        if self._raw_pending is not None:
            raise RuntimeError("a previous read_exactly() is still pending")
        if self._single is not None:
            self._unstash()  # not a line after all: the block starts there
        self._raw_pending = n

    def peek(self, n: int) -> bytes:
        r"""The first ``n`` bytes received but not yet returned, left in place.

        Between events this is the start of the line being received (or of
        a pending `read_exactly` block).

        >>> framer = LineFramer()
        >>> framer.receive_data(b"one\ntw")
        >>> framer.next_event(), framer.next_event(), framer.peek(5)
        (Line(data=b'one'), NEED_DATA, b'tw')
        """
        if self._single is not None:
            return self._single[:n]
        start = self._start
        return bytes(self._buf[start : start + n])

    def take_buffered(self) -> bytes:
        """Removes and returns every byte not yet returned as an event.

        Use this to hand the connection over to another protocol. The framer
        forgets any pending `read_exactly` and any overlong line it was
        discarding (the result then holds only the few trailing bytes of
        that line it kept to spot a split delimiter); later input is framed
        as lines from a fresh state.
        """
        if self._single is not None:
            self._unstash()
        data = bytes(self._buf[self._start :])
        self._buf.clear()
        self._start = self._search_from = 0
        self._discarding = False
        self._raw_pending = None
        return data

    def frame(self, line: bytes | bytearray | memoryview) -> bytes:
        """Returns ``line`` followed by the delimiter, ready to send.

        Raises `ValueError` if the peer would not read ``line`` back intact,
        that is if it contains the delimiter, or if it ends with bytes that
        form a delimiter together with the start of the appended one (such
        as ``b"a\\r\\n"`` with the delimiter ``b"\\r\\n\\r\\n"``).
        """
        if line.__class__ is bytes:
            framed = line + self._delimiter
        elif isinstance(line, (bytes, bytearray, memoryview)):
            framed = bytes(line) + self._delimiter
        else:
            raise TypeError(f"line must be a bytes-like object, not {line!r}")
        if framed.find(self._delimiter) != len(framed) - self._dlen:
            raise ValueError(f"line {line!r} contains the delimiter")
        return framed

    def _next_line(self) -> Event | Literal[_NeedData.NEED_DATA]:
        buf, delim, start = self._buf, self._delimiter, self._start
        last_start = start + self._max_line_length
        # Stop searching where a delimiter would end for a line of exactly
        # max_line_length bytes: anything further away is overlong anyway,
        # and the discard phase scans it.
        index = buf.find(delim, self._search_from, last_start + len(delim))
        if index >= 0:
            line = bytes(buf[start:index])
            self._consume_to(index + len(delim))
            return Line(line)
        end = len(buf)
        self._search_from = max(start, end - len(delim) + 1)
        if end > last_start and not self._delimiter_may_start_by(last_start):
            self._consume_to(last_start + 1)
            self._discarding = True
            self._discard()
            return LineTooLong(self._max_line_length)
        if self._eof:
            if end - start > self._max_line_length:
                # The unterminated tail is an overlong line too; report it
                # like one so the events do not depend on delimiter length.
                self._consume_to(end)
                self._discarding = True
                return LineTooLong(self._max_line_length)
            return self._end(bytes(buf[start:]))
        return NEED_DATA

    def _delimiter_may_start_by(self, position: int) -> bool:
        # True if the buffer ends with an incomplete delimiter beginning at
        # or before `position`; no complete one is there, as _next_line
        # searched for it. At most len(delimiter) - 1 short checks.
        buf, delim, end = self._buf, self._delimiter, len(self._buf)
        first = max(self._start, end - len(delim) + 1)
        return any(buf.endswith(delim[: end - p]) for p in range(first, position + 1))

    def _next_raw(self, n: int) -> Event | Literal[_NeedData.NEED_DATA]:
        start = self._start
        if len(self._buf) - start >= n:
            data = bytes(self._buf[start : start + n])
            self._consume_to(start + n)
            self._raw_pending = None
            return RawData(data)
        if self._eof:
            self._raw_pending = None
            return self._end(bytes(self._buf[start:]))
        return NEED_DATA

    def _discard(self) -> bool:
        """Drops bytes through the next delimiter; True once it was found."""
        buf, delim = self._buf, self._delimiter
        index = buf.find(delim, self._search_from)
        if index >= 0:
            self._consume_to(index + len(delim))
            self._discarding = False
            return True
        # Keep only what may be the start of a delimiter split across chunks.
        self._consume_to(max(self._start, len(buf) - len(delim) + 1))
        return False

    def _end(self, tail: bytes) -> EndOfInput:
        self._finished = True
        self._buf.clear()
        self._start = self._search_from = 0
        return EndOfInput(tail)

    def _consume_to(self, position: int) -> None:
        self._start = self._search_from = position

    def _unstash(self) -> None:
        assert self._single is not None
        self._compact()
        self._buf += self._single
        self._single = None

    def _compact(self) -> None:
        start = self._start
        if start == len(self._buf):
            self._buf.clear()
        elif start < _COMPACT_MIN or start < len(self._buf) // 2:
            return
        else:
            del self._buf[:start]
        self._start = 0
        self._search_from -= start
