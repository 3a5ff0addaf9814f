"""`LineServer`: line protocols by subclassing, on the sans-IO `.LineFramer`."""

from __future__ import annotations

import codecs
import enum
import types
from asyncio import Future
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from tornado.iostream import IOStream, StreamClosedError

from tornado_echo._fairness import next_turn
from tornado_echo._halfclose import chunk_reader
from tornado_echo._lifecycle import DEFAULT_CHUNK_SIZE
from tornado_echo._logs import format_address
from tornado_echo.errors import Error
from tornado_echo.lines import (
    DEFAULT_MAX_LINE_LENGTH,
    LONG_LINE_REPLY,
    NEED_DATA,
    EndOfInput,
    Event,
    Line,
    LineFramer,
    LineTooLong,
    LongLinePolicy,
    RawData,
    check_long_line_policy,
    log_line_too_long,
)
from tornado_echo.server import TCPServerOptions, TrackedTCPServer

if TYPE_CHECKING:
    from tornado_echo.proxy_header import ProxyHeader

_T = TypeVar("_T")


class IncompleteReadError(Error, StreamClosedError):
    """The peer closed the connection in the middle of `LineConnection.read_exactly`.

    ``partial`` holds the bytes that did arrive. A `.StreamClosedError`, so
    a handler that lets it escape ends the connection quietly, like any
    other disconnect.
    """

    def __init__(self, partial: bytes, expected: int) -> None:
        super().__init__()
        self.args = (f"connection closed after {len(partial)} of {expected} bytes",)
        self.partial = partial
        self.expected = expected


class LineConnection:
    """One client of a `LineServer`, passed to every hook.

    Set any attributes you like on it to keep per-connection state; state
    that all connections share belongs on the server (see `LineServer`).

    .. versionadded:: 0.2.0
    """

    def __init__(self, server: LineServer, stream: IOStream, address: Any) -> None:
        #: The server this connection belongs to, and the place for state
        #: that all its connections share.
        self.server: LineServer = server
        #: The connection's stream.
        self.stream: IOStream = stream
        #: The peer: ``(host, port)`` for TCP, ``""`` for a unix socket.
        self.address: Any = address
        self._framer = LineFramer(server.delimiter, server.max_line_length)
        self._chunk_size = server.read_chunk_size or DEFAULT_CHUNK_SIZE
        self._read = chunk_reader(stream)
        self._turn = server.new_turn()
        self._closed = False
        self._finishing = False
        self._at_eof = False
        self._partial_line_check = server.partial_line_check
        self._partial_checked = False  # this line was shown to the check
        self._raw = False  # inside read_exactly
        # Replies to lines of the current read, framed, not yet written: they
        # go out together, in one write, before the next read (see
        # LineServer.serve_stream). Only when send_line and write are ours,
        # so that a subclass overriding either still sees every line.
        self._owed: list[bytes] = []
        self._owed_size = 0
        cls = type(self)
        self._batches = (
            cls.send_line is LineConnection.send_line
            and cls.write is LineConnection.write
        )
        #: Lines handled on this connection.
        self.lines: int = 0
        #: Overlong lines refused on this connection.
        self.lines_too_long: int = 0

    def __repr__(self) -> str:
        return f"<LineConnection {self.peer}>"

    @property
    def peer(self) -> str:
        """The peer as text for logs: ``host:port``, ``[v6]:port`` or ``unix``."""
        return format_address(self.address)

    @property
    def proxy_header(self) -> ProxyHeader | None:
        """The PROXY protocol header this connection started with, if any.

        Set when the server has ``proxy_protocol`` on; its TLVs (`.ProxyHeader.tlv`,
        ``authority``, ``alpn``, ...) are what the balancer added.

        .. versionadded:: 0.3.0
        """
        header: ProxyHeader | None = getattr(self.stream, "proxy_header", None)
        return header

    @property
    def closed(self) -> bool:
        """True once `close` was called or the connection failed."""
        return self._closed

    def send_line(self, line: bytes | str) -> Future[None]:
        """Send ``line`` followed by the delimiter; await the result.

        The returned `.Future` resolves once the line was handed to the
        kernel. A `str` is encoded with the server's ``encoding``. Raises
        `ValueError` if the line contains the delimiter.

        .. versionchanged:: 0.3.0
           A plain method returning a `.Future` (it was ``async``); callers
           await it as before.
        """
        return self.write(self._framed(line))

    def write(self, data: bytes) -> Future[None]:
        """Send raw bytes; await the result.

        The returned `.Future` resolves once the bytes were handed to the
        kernel. Awaiting it is the backpressure: a client that does not read
        makes this wait, not the server's memory grow. The bytes follow any
        replies still owed to earlier lines (write through this method or
        `send_line`, not ``stream.write``, to keep that order).

        .. versionchanged:: 0.3.0
           A plain method returning a `.Future` (it was ``async``).
        """
        if self._owed:
            # Replies owed to earlier lines go first, in the same write.
            self._owed.append(data)
            return self._pay()
        return self.stream.write(data)

    def _owe(self, reply: bytes | str) -> Future[None] | None:
        """Frame ``reply`` to be written with the rest of this read's replies.

        Returns the write once enough is owed that it should not wait.
        """
        data = self._framed(reply)
        self._owed.append(data)
        self._owed_size += len(data)
        if self._owed_size >= _OWED_LIMIT:
            return self._pay()
        return None

    def _framed(self, line: bytes | str) -> bytes:
        if isinstance(line, str):
            line = line.encode(self.server.encoding)
        return self._framer.frame(line)

    def _pay_what_it_can(self) -> None:
        """Hand what is owed to the kernel, if it takes it, without waiting."""
        if self._owed and not self._closed and not self.stream.closed():
            self._pay()

    def _pay(self) -> Future[None]:
        """Write every reply owed, in one write; await it."""
        owed = self._owed
        data = owed[0] if len(owed) == 1 else b"".join(owed)
        owed.clear()
        self._owed_size = 0
        return self.stream.write(data)

    def close(self) -> None:
        """Close the connection now, from any task.

        Replies already awaited were handed to the kernel, but a client that
        has not read them yet may lose them to the reset that closing with
        its input unread causes; to end a conversation, prefer `finish`.
        """
        # Replies owed to earlier lines were as good as sent before.
        self._pay_what_it_can()
        self._closed = True
        self.stream.close()

    def finish(self) -> None:
        """End the connection once the current hook returns, losing nothing.

        No more lines are read. The server sends FIN after everything
        already sent, drops the client's input until it closes too (for a
        couple of seconds at most), then closes.
        """
        self._finishing = True

    async def read_exactly(self, n: int) -> bytes:
        """Read exactly ``n`` raw bytes (raw mode), then go back to lines.

        The bytes start right after the current line, whether they are
        already buffered or still to arrive. Raises `IncompleteReadError` if
        the peer closes first. The caller chooses ``n``, so bound it.
        """
        self._framer.read_exactly(n)
        self._raw = True
        try:
            event = await self._next_event()
        finally:
            self._raw = False
        if isinstance(event, RawData):
            return event.data
        assert isinstance(event, EndOfInput), event
        raise IncompleteReadError(event.tail, n)

    def take_buffered(self) -> bytes:
        """Take every byte received but not yet framed (to leave line mode)."""
        return self._framer.take_buffered()

    async def _next_event(self) -> Event:
        framer = self._framer
        while (event := framer.next_event()) is NEED_DATA:
            if not self._before_read():
                return EndOfInput(b"")
            try:
                data = await self._read(self._chunk_size, False)
            except StreamClosedError as exc:
                if self._closed or exc.real_error is not None:
                    raise
                data = b""  # the peer's FIN: the framer flushes what it holds
            self._received(data)
        if not isinstance(event, RawData):
            self._partial_checked = False  # that line is done
        return event

    # The steps of a read, shared by _next_event and LineServer.serve_stream,
    # which inlines the read itself: one coroutine less per line.

    def _before_read(self) -> bool:
        """Show a long partial line to the check; False if no more input comes."""
        check = self._partial_line_check
        if (
            check is not None
            and not self._partial_checked
            and not self._raw
            and self._framer.buffered > check
        ):
            # Between events the framer holds just the line coming in.
            self._partial_checked = True
            self.server.check_partial_line(self, self._framer.peek(check))
            if self._closed:
                raise StreamClosedError()
        # Once the framer has reported the end, nothing more comes.
        return not self._at_eof

    def _received(self, data: bytes) -> None:
        if not data:
            self._at_eof = True
        self._turn.after_read(len(data) == self._chunk_size)
        self._framer.receive_data(data)


# Past this many bytes of owed replies, they are written without waiting for
# the read's last line: the replies to one read can be far larger than it.
_OWED_LIMIT = 65536


@types.coroutine
def _carry_on(
    handling: Coroutine[Any, Any, _T], waits_for: Any
) -> Generator[Any, Any, _T]:
    """Go on with ``handling``, already started and now waiting for ``waits_for``.

    What ``await handling`` would have done from there: what the handler
    yields goes to the Task, and what the Task sends or throws (a
    cancellation) goes to the handler.
    """
    while True:
        try:
            sent = yield waits_for
        except BaseException as exc:  # noqa: BLE001 - every one is the handler's
            try:
                waits_for = handling.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                waits_for = handling.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


class _Unset(enum.Enum):
    # A keyword left out, where None is a value of its own.
    UNSET = enum.auto()


_UNSET = _Unset.UNSET


class LineServer(TrackedTCPServer):
    r"""A line protocol server: subclass it and implement `handle_line`.

    The server owns the loop, the buffers and the error paths: it frames
    input into lines (any delimiter, default ``b"\n"``), calls `handle_line`
    for each in order, sends what it returns as a line, and awaits every
    write, so each connection has backpressure and a slow client never
    holds up the others. The replies to the lines that arrived in one read
    go out together, in one write, before the next read; a handler that
    waits for something lets the replies owed to earlier lines go first.
    Lines longer than ``max_line_length`` (default 65536, not counting the
    delimiter) follow ``on_long_line``:

    ``"close"`` (default)
        the line is never delivered and the connection is closed once
        everything already owed has been sent (`LineConnection.finish`);
    ``"skip"``
        the line is discarded up to and including its delimiter, and the
        connection carries on, still in sync;
    ``"reply"``
        like ``skip``, after sending ``long_line_reply``
        (``"ERROR line too long"``).

    When the client half-closes, every line it sent is answered, then
    `handle_eof` runs with the unterminated tail (it may still write, except
    on TLS connections, where the close is final), then the connection
    closes. Connections are tracked and ``shutdown`` drains
    them, as for `.EchoServer`.

    The smallest server, runnable as is::

        import tornado_echo

        class Upper(tornado_echo.LineServer):
            async def handle_line(self, conn, line):
                return line.upper()

        tornado_echo.run(server=Upper)

    Class attributes give the defaults; the constructor arguments of the
    same names override them per instance.

    .. rubric:: State shared by every connection

    A store, a list of chat rooms, a counter: keep it on the server, set up
    in ``__init__``, which passes the constructor's keywords on. The hooks
    are the server's methods, so they reach it as ``self`` (and other code
    as ``conn.server``); what belongs to one client goes on its
    `LineConnection`. A server runs in one event loop, so code between two
    ``await``\ s runs alone and needs no lock. With ``run(processes=N)``
    each worker builds its own server, and so has its own copy::

        import tornado_echo

        class Counter(tornado_echo.LineServer):
            def __init__(self, **options):
                super().__init__(**options)
                self.seen = 0  # every connection's lines, counted together

            async def handle_line(self, conn, line):
                self.seen += 1
                return f"{self.seen} lines so far"

        tornado_echo.run(server=Counter)

    .. versionadded:: 0.2.0
    """

    #: The line delimiter: any non-empty bytes.
    delimiter: bytes = b"\n"
    #: The longest line, in bytes, not counting the delimiter.
    max_line_length: int = DEFAULT_MAX_LINE_LENGTH
    #: What a longer line does: ``"close"``, ``"skip"`` or ``"reply"``.
    on_long_line: LongLinePolicy = "close"
    #: What ``"reply"`` sends back for an overlong line.
    long_line_reply: bytes | str = LONG_LINE_REPLY
    #: How a `str` that a hook returns or sends is encoded.
    encoding: str = "utf-8"
    #: The class of each connection's `LineConnection`: subclass it to add
    #: methods or per-connection state.
    connection_class: type[LineConnection] = LineConnection
    #: Show a line that has grown past this many bytes without its
    #: delimiter to `check_partial_line`; None never does.
    partial_line_check: int | None = None

    def __init__(
        self,
        *,
        delimiter: bytes | None = None,
        max_line_length: int | None = None,
        on_long_line: LongLinePolicy | None = None,
        long_line_reply: bytes | str | None = None,
        encoding: str | None = None,
        connection_class: type[LineConnection] | None = None,
        partial_line_check: int | None | _Unset = _UNSET,
        **options: Unpack[TCPServerOptions],
    ) -> None:
        super().__init__(**options)
        # None keeps the class attribute, except for partial_line_check,
        # where None is a value (never check), so leaving it out keeps it.
        for name, value in (
            ("delimiter", delimiter),
            ("max_line_length", max_line_length),
            ("on_long_line", on_long_line),
            ("long_line_reply", long_line_reply),
            ("encoding", encoding),
            ("connection_class", connection_class),
        ):
            if value is not None:
                setattr(self, name, value)
        if not isinstance(partial_line_check, _Unset):
            self.partial_line_check = partial_line_check
        self._validate()
        self._line_connections: set[LineConnection] = set()

    def _validate(self) -> None:
        """Check every setting once, when the server is built, in one sentence each."""
        check_long_line_policy(self.on_long_line)
        try:
            codecs.lookup(self.encoding)
        except (LookupError, TypeError):
            raise ValueError(
                f"encoding {self.encoding!r} is not a known codec"
            ) from None
        reply = self.long_line_reply
        if isinstance(reply, str):
            try:
                reply = reply.encode(self.encoding)
            except UnicodeError:
                raise ValueError(
                    f"long_line_reply {reply!r} cannot be encoded as {self.encoding}"
                ) from None
        if not isinstance(reply, bytes):
            raise TypeError(f"long_line_reply must be bytes or str, not {reply!r}")
        if not (
            isinstance(self.connection_class, type)
            and issubclass(self.connection_class, LineConnection)
        ):
            raise TypeError(
                "connection_class must be a subclass of LineConnection, "
                f"not {self.connection_class!r}"
            )
        check = self.partial_line_check
        if check is not None and not (
            isinstance(check, int) and not isinstance(check, bool) and check >= 1
        ):
            raise ValueError(
                f"partial_line_check must be None or at least 1, not {check!r}"
            )
        # delimiter and max_line_length, with the framer's own messages.
        LineFramer(self.delimiter, self.max_line_length)

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet handled, over all connections.

        Each connection holds at most about ``max_line_length`` plus one
        read chunk, whatever its client sends.
        """
        return sum(c._framer.buffered for c in self._line_connections)

    async def handle_line(
        self, conn: LineConnection, line: bytes
    ) -> bytes | str | None:
        """Handle one line (without its delimiter); return a reply or None.

        A returned value is sent as one line; ``None`` sends nothing. Use
        ``conn.send_line`` to send more than one.
        """
        raise NotImplementedError()

    async def on_connect(self, conn: LineConnection) -> None:
        """Called when a client connects, before its first line."""

    async def on_disconnect(self, conn: LineConnection) -> None:
        """Called once when the connection ends, however it ends."""

    async def handle_eof(self, conn: LineConnection, tail: bytes) -> None:
        """Called when the client half-closes, after all its lines.

        ``tail`` holds any bytes after the last delimiter. The default
        ignores it: an incomplete command must not run.
        """

    def check_partial_line(self, conn: LineConnection, head: bytes) -> None:
        """Look at a line that is still arriving; `.LineConnection.close` to refuse it.

        Called once per line, when more than ``partial_line_check`` bytes of
        it have arrived without a delimiter, with its first
        ``partial_line_check`` bytes. A protocol whose lines may be long only
        for some commands (memcached's ``get`` of many keys) can refuse the
        rest there, before the whole ``max_line_length`` is buffered. The
        default accepts the line.

        .. versionadded:: 0.3.0
        """

    async def handle_long_line(self, conn: LineConnection) -> None:
        """Called when a line exceeds ``max_line_length``; applies the policy."""
        if self.on_long_line == "close":
            conn.finish()
        elif self.on_long_line == "reply":
            await conn.send_line(self.long_line_reply)

    async def serve_stream(self, stream: IOStream, address: Any) -> None:
        conn = self.connection_class(self, stream, address)
        self._line_connections.add(conn)
        self.count_lines(stream, conn)  # type: ignore[arg-type]
        framer, turn, read = conn._framer, conn._turn, conn._read
        chunk_size, batches = conn._chunk_size, conn._batches
        checks = conn._partial_line_check is not None
        handle_line = self.handle_line
        try:
            await self.on_connect(conn)
            while not (conn._closed or conn._finishing):
                event = framer.next_event()
                if event is NEED_DATA:
                    # Everything owed to this read's lines, in one write,
                    # awaited (the backpressure) before reading on.
                    if conn._owed:
                        await conn._pay()
                    if (checks or conn._at_eof) and not conn._before_read():
                        event = EndOfInput(b"")
                    else:
                        try:
                            data = await read(chunk_size, False)
                        except StreamClosedError as exc:
                            # A bare raise: re-raising exc from a function
                            # that holds it would tie it to that frame in a
                            # cycle, and keep the connection until a full
                            # collection.
                            if conn._closed or exc.real_error is not None:
                                raise
                            data = b""  # the peer's FIN
                        conn._received(data)
                        # The first line of a read goes straight on: if the
                        # read came back short, the next one waits for the
                        # poller anyway, so there is no turn to give up.
                        event = framer.next_event()
                        if event is NEED_DATA:
                            continue
                elif turn.due():
                    # More lines at hand: queued, so give way in between.
                    if conn._owed:
                        await conn._pay()
                    await next_turn()
                conn._partial_checked = False  # that line is done
                if event.__class__ is Line:
                    conn.lines += 1
                    line = event.data
                    if not (batches and (conn._owed or framer.buffered)):
                        # The only line at hand (a request and its reply, the
                        # usual case), or a subclass's own send_line or write:
                        # nothing to write together with, so no batch.
                        reply = await handle_line(conn, line)
                        if reply is not None and not conn._closed:
                            await conn.send_line(reply)
                        continue
                    handling = handle_line(conn, line)
                    if handling.__class__ is not types.CoroutineType:
                        reply = await handling  # an awaitable, not a coroutine
                    else:
                        try:
                            waits_for = handling.send(None)
                        except StopIteration as done:
                            # Answered without waiting: no Task wake-up, and
                            # the reply joins this read's others.
                            reply = done.value
                        else:
                            # The handler waits for something: what is owed
                            # to earlier lines goes out first, in order.
                            paying = conn._pay() if conn._owed else None
                            reply = await _carry_on(handling, waits_for)
                            if paying is not None:
                                await paying
                    if reply is not None and not conn._closed:
                        paying = conn._owe(reply)
                        if paying is not None:
                            await paying
                    continue
                if conn._owed:
                    await conn._pay()
                if isinstance(event, LineTooLong):
                    conn.lines_too_long += 1
                    log_line_too_long(format_address(address), event, self.on_long_line)
                    await self.handle_long_line(conn)
                elif isinstance(event, EndOfInput):
                    await self.handle_eof(conn, event.tail)
                    return
                else:
                    # RawData only ever reaches conn.read_exactly.
                    raise TypeError(f"unexpected framer event {event!r}")
            if conn._owed and not conn._closed:
                await conn._pay()
        except StreamClosedError:
            if not conn.closed:
                raise
        except BaseException:
            # A handler failed: the replies to the lines before it still go.
            conn._pay_what_it_can()
            raise
        finally:
            self._line_connections.discard(conn)
            await self.on_disconnect(conn)
