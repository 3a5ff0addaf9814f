"""Tests for the sans-IO line framer in `tornado_echo.lines`."""

from __future__ import annotations

import doctest
import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tornado_echo import lines
from tornado_echo.lines import (
    DEFAULT_MAX_LINE_LENGTH,
    NEED_DATA,
    EndOfInput,
    Event,
    Line,
    LineFramer,
    LineTooLong,
    RawData,
)

DELIMITERS = [b"\n", b"\r\n", b"END", b"\r\n\r\n"]

# Bytes that are delimiter characters (or prefixes of one), so generated
# input is full of partial and overlapping delimiters.
ALPHABET = b"xa\r\nEND"

FAST = settings(max_examples=150, deadline=None)


def drain(framer: LineFramer) -> list[Event]:
    events: list[Event] = []
    while (event := framer.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def feed(
    chunks: Iterable[bytes],
    delimiter: bytes = b"\n",
    max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
) -> list[Event]:
    framer = LineFramer(delimiter, max_line_length)
    events: list[Event] = []
    for chunk in chunks:
        if chunk:  # b"" would mean end of input
            framer.receive_data(chunk)
            events += drain(framer)
    framer.receive_data(b"")
    events += drain(framer)
    return events


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def reference(data: bytes, delimiter: bytes, max_line_length: int) -> list[Event]:
    """The framer's specification, written the obvious non-incremental way."""
    *complete, tail = data.split(delimiter)
    events: list[Event] = [
        Line(line) if len(line) <= max_line_length else LineTooLong(max_line_length)
        for line in complete
    ]
    if len(tail) > max_line_length:
        events += [LineTooLong(max_line_length), EndOfInput(b"")]
    else:
        events.append(EndOfInput(tail))
    return events


@st.composite
def chunked_input(draw: st.DrawFn) -> tuple[bytes, list[bytes], bytes, int]:
    """Lines (some overlong, some with delimiter fragments), split anywhere."""
    delimiter = draw(st.sampled_from(DELIMITERS))
    cap = draw(st.integers(1, 20))
    pieces = draw(st.lists(st.binary(max_size=cap + 6), max_size=12))
    fuzz = draw(st.lists(st.sampled_from(list(ALPHABET)), max_size=cap + 6).map(bytes))
    data = delimiter.join(pieces) + draw(st.sampled_from([b"", delimiter])) + fuzz
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=20))
    return data, split_at(data, cuts), delimiter, cap


@st.composite
def alphabet_input(draw: st.DrawFn) -> tuple[bytes, list[bytes], bytes, int]:
    delimiter = draw(st.sampled_from(DELIMITERS))
    cap = draw(st.integers(1, 20))
    data = bytes(draw(st.lists(st.sampled_from(list(ALPHABET)), max_size=120)))
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=30))
    return data, split_at(data, cuts), delimiter, cap


# -- chunking invariance and the reference model ---------------------------


def test_byte_at_a_time_gives_same_events_as_one_feed() -> None:
    data = b"one\r\ntwo\r\n\r\nthree \r in it\r\n" + b"x" * 40 + b"\r\nlast\r"
    whole = feed([data], b"\r\n", 16)
    bytewise = feed([data[i : i + 1] for i in range(len(data))], b"\r\n", 16)
    assert bytewise == whole
    assert whole == [
        Line(b"one"),
        Line(b"two"),
        Line(b""),
        Line(b"three \r in it"),
        LineTooLong(16),
        EndOfInput(b"last\r"),
    ]


@FAST
@given(chunked_input())
def test_any_chunking_yields_same_events(
    case: tuple[bytes, list[bytes], bytes, int],
) -> None:
    data, chunks, delimiter, cap = case
    assert feed(chunks, delimiter, cap) == feed([data], delimiter, cap)


@FAST
@given(st.one_of(chunked_input(), alphabet_input()))
def test_framer_agrees_with_reference_model(
    case: tuple[bytes, list[bytes], bytes, int],
) -> None:
    data, chunks, delimiter, cap = case
    assert feed(chunks, delimiter, cap) == reference(data, delimiter, cap)


def feed_taking_lines(
    chunks: Iterable[bytes], delimiter: bytes, max_line_length: int
) -> list[Event]:
    """Like `feed`, but through `LineFramer.receive_lines` wherever it takes."""
    framer = LineFramer(delimiter, max_line_length)
    events: list[Event] = []
    for chunk in [*chunks, b""]:
        taken = framer.receive_lines(chunk)
        if taken is not None:
            span, count = taken
            assert span.endswith(delimiter)
            *lines, rest = span.split(delimiter)
            assert rest == b"" and len(lines) == count
            events += [Line(line) for line in lines]
        events += drain(framer)
    return events


@FAST
@given(st.one_of(chunked_input(), alphabet_input()))
def test_taking_lines_in_one_piece_gives_the_same_lines(
    case: tuple[bytes, list[bytes], bytes, int],
) -> None:
    data, chunks, delimiter, cap = case
    assert feed_taking_lines(chunks, delimiter, cap) == reference(data, delimiter, cap)


@FAST
@given(
    st.sampled_from([b"aa", b"aba", b"\n"]),
    st.lists(st.sampled_from([b"a", b"b", b"\n", b"xyz"]), max_size=40),
    st.lists(st.integers(0, 60), max_size=10),
)
def test_taking_lines_agrees_for_delimiters_that_overlap_themselves(
    delimiter: bytes, pieces: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(pieces)
    chunks = split_at(data, cuts)
    assert feed_taking_lines(chunks, delimiter, 6) == feed(chunks, delimiter, 6)


@FAST
@given(
    st.sampled_from(DELIMITERS),
    st.integers(1, 20),
    st.lists(st.integers(0, 26), min_size=1, max_size=8),
    st.data(),
)
def test_cap_is_exact_for_every_line_length(
    delimiter: bytes, cap: int, lengths: list[int], data: st.DataObject
) -> None:
    body = [b"x" * n for n in lengths]
    stream = b"".join(line + delimiter for line in body)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    expected: list[Event] = [
        Line(line) if len(line) <= cap else LineTooLong(cap) for line in body
    ]
    assert feed(split_at(stream, cuts), delimiter, cap) == [
        *expected,
        EndOfInput(b""),
    ]


@FAST
@given(
    st.sampled_from(DELIMITERS),
    st.lists(st.binary(max_size=10), max_size=10),
    st.data(),
)
def test_framed_lines_round_trip(
    delimiter: bytes, body: list[bytes], data: st.DataObject
) -> None:
    framer = LineFramer(delimiter)
    framed: list[bytes] = []
    for line in body:
        try:
            framed.append(framer.frame(line))
        except ValueError:
            continue
    stream = b"".join(framed)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    expected = [Line(f[: -len(delimiter)]) for f in framed]
    assert feed(split_at(stream, cuts), delimiter) == [*expected, EndOfInput(b"")]


# -- delimiters ------------------------------------------------------------


def test_crlf_split_between_cr_and_lf() -> None:
    framer = LineFramer(b"\r\n")
    framer.receive_data(b"hello\r")
    assert drain(framer) == []
    framer.receive_data(b"\nworld\r")
    assert drain(framer) == [Line(b"hello")]
    framer.receive_data(b"\n")
    assert drain(framer) == [Line(b"world")]


def test_lone_cr_is_data_with_crlf_delimiter() -> None:
    assert feed([b"a\rb\r\r\n\rc\n\r\n"], b"\r\n") == [
        Line(b"a\rb\r"),
        Line(b"\rc\n"),
        EndOfInput(b""),
    ]


@pytest.mark.parametrize("delimiter", [b"END", b"\r\n\r\n"])
def test_multibyte_delimiter_split_at_every_position(delimiter: bytes) -> None:
    data = b"head" + delimiter + b"E\r\nN\r" + delimiter
    for cut in range(len(data) + 1):
        for cut2 in range(cut, len(data) + 1):
            chunks = [data[:cut], data[cut:cut2], data[cut2:]]
            assert feed(chunks, delimiter) == [
                Line(b"head"),
                Line(b"E\r\nN\r"),
                EndOfInput(b""),
            ]


def test_first_delimiter_wins_when_delimiter_overlaps_itself() -> None:
    assert feed([b"a\r\n\r\n\r\nb"], b"\r\n\r\n") == [
        Line(b"a"),
        EndOfInput(b"\r\nb"),
    ]


# -- the line length cap ---------------------------------------------------


@pytest.mark.parametrize("delimiter", DELIMITERS)
def test_line_of_exactly_cap_accepted_however_split(delimiter: bytes) -> None:
    cap = 10
    data = b"y" * cap + delimiter + b"ok" + delimiter
    expected = [Line(b"y" * cap), Line(b"ok"), EndOfInput(b"")]
    for cut in range(len(data) + 1):
        for cut2 in range(cut, len(data) + 1):
            chunks = [data[:cut], data[cut:cut2], data[cut2:]]
            assert feed(chunks, delimiter, cap) == expected


@pytest.mark.parametrize("delimiter", DELIMITERS)
def test_cap_plus_one_is_too_long_and_stream_stays_in_sync(delimiter: bytes) -> None:
    cap = 10
    data = b"z" * (cap + 1) + delimiter + b"next" + delimiter + b"more" + delimiter
    expected = [LineTooLong(cap), Line(b"next"), Line(b"more"), EndOfInput(b"")]
    for cut in range(len(data) + 1):
        assert feed([data[:cut], data[cut:]], delimiter, cap) == expected


def test_too_long_reported_as_soon_as_certain() -> None:
    framer = LineFramer(b"\r\n", max_line_length=3)
    framer.receive_data(b"abc\r")
    # "abc" + "\r\n" may still be a valid line.
    assert drain(framer) == []
    framer.receive_data(b"x")
    assert drain(framer) == [LineTooLong(3)]

    framer = LineFramer(b"\r\n", max_line_length=3)
    framer.receive_data(b"abcd")
    assert drain(framer) == [LineTooLong(3)]


def test_too_long_reported_before_its_delimiter_arrives() -> None:
    framer = LineFramer(b"\n", max_line_length=4)
    framer.receive_data(b"ok\n123456")
    assert drain(framer) == [Line(b"ok"), LineTooLong(4)]
    framer.receive_data(b"789")
    assert drain(framer) == []
    framer.receive_data(b"0\nfine\n")
    assert drain(framer) == [Line(b"fine")]


@pytest.mark.parametrize("delimiter", DELIMITERS)
def test_endless_line_keeps_buffer_bounded_and_is_reported_once(
    delimiter: bytes,
) -> None:
    cap = 1024
    chunk = b"x" * 65536
    framer = LineFramer(delimiter, cap)
    events: list[Event] = []
    for _ in range(10 * 1024 * 1024 // len(chunk)):
        framer.receive_data(chunk)
        assert framer.buffered <= cap + len(delimiter) + len(chunk)
        events += drain(framer)
        assert framer.buffered <= len(delimiter) - 1
    assert events == [LineTooLong(cap)]
    framer.receive_data(delimiter + b"back in sync" + delimiter)
    assert drain(framer) == [Line(b"back in sync")]


def test_endless_line_stays_bounded_even_without_draining() -> None:
    framer = LineFramer(b"\r\n", 100)
    framer.receive_data(b"x" * 1000)
    assert drain(framer) == [LineTooLong(100)]
    for _ in range(100):
        framer.receive_data(b"x" * 1000)
        assert framer.buffered <= 1
    framer.receive_data(b"\r")
    framer.receive_data(b"\nok\r\n")
    assert drain(framer) == [Line(b"ok")]


def test_default_cap_is_64_kib() -> None:
    framer = LineFramer()
    assert framer.max_line_length == DEFAULT_MAX_LINE_LENGTH == 65536
    assert feed([b"a" * 65536 + b"\n" + b"b" * 65537 + b"\n"]) == [
        Line(b"a" * 65536),
        LineTooLong(65536),
        EndOfInput(b""),
    ]


# -- end of input ----------------------------------------------------------


def test_eof_after_complete_line_gives_empty_tail() -> None:
    assert feed([b"done\n"]) == [Line(b"done"), EndOfInput(b"")]


def test_eof_gives_unterminated_tail() -> None:
    assert feed([b"done\npart", b"ial"]) == [Line(b"done"), EndOfInput(b"partial")]


def test_eof_on_empty_input() -> None:
    assert feed([]) == [EndOfInput(b"")]


def test_eof_keeps_partial_delimiter_in_tail() -> None:
    assert feed([b"a\r\nb\r"], b"\r\n") == [Line(b"a"), EndOfInput(b"b\r")]


def test_eof_while_discarding_gives_empty_tail() -> None:
    assert feed([b"x" * 50], b"\n", 10) == [LineTooLong(10), EndOfInput(b"")]


def test_overlong_unterminated_tail_is_too_long() -> None:
    # 4 bytes could still be "abc" + "\r\n" until the input ends.
    assert feed([b"abc\r"], b"\r\n", 3) == [LineTooLong(3), EndOfInput(b"")]


def test_need_data_forever_after_end_of_input() -> None:
    framer = LineFramer()
    framer.receive_data(b"a\n")
    framer.receive_data(b"")
    assert framer.next_event() == Line(b"a")
    assert framer.next_event() == EndOfInput(b"")
    for _ in range(3):
        assert framer.next_event() is NEED_DATA


def test_need_data_before_end_of_input() -> None:
    framer = LineFramer()
    assert framer.next_event() is NEED_DATA
    framer.receive_data(b"partial")
    assert framer.next_event() is NEED_DATA


def test_receive_after_end_of_input_raises() -> None:
    framer = LineFramer()
    framer.receive_data(b"")
    with pytest.raises(RuntimeError):
        framer.receive_data(b"more")
    with pytest.raises(RuntimeError):
        framer.receive_data(b"")


# -- raw mode --------------------------------------------------------------


def test_raw_block_between_lines() -> None:
    framer = LineFramer(b"\r\n")
    framer.receive_data(b"set k 5\r\nhello\r\nget k\r\n")
    assert framer.next_event() == Line(b"set k 5")
    framer.read_exactly(5 + 2)
    assert framer.next_event() == RawData(b"hello\r\n")
    assert framer.next_event() == Line(b"get k")
    assert framer.next_event() is NEED_DATA


def test_raw_block_may_contain_delimiters_and_exceed_cap() -> None:
    framer = LineFramer(b"\n", max_line_length=4)
    framer.receive_data(b"put\n\n\nlong raw block\nafter\n")
    assert framer.next_event() == Line(b"put")
    framer.read_exactly(17)
    assert drain(framer) == [
        RawData(b"\n\nlong raw block\n"),
        LineTooLong(4),
    ]


def test_raw_block_split_across_feeds() -> None:
    data = b"set k 5\r\nhello\r\nget k\r\n"
    for cut in range(len(data) + 1):
        for cut2 in range(cut, len(data) + 1):
            framer = LineFramer(b"\r\n")
            events: list[Event] = []
            for chunk in (data[:cut], data[cut:cut2], data[cut2:]):
                if not chunk:
                    continue
                framer.receive_data(chunk)
                while (event := framer.next_event()) is not NEED_DATA:
                    events.append(event)
                    if event == Line(b"set k 5"):
                        framer.read_exactly(7)
            assert events == [Line(b"set k 5"), RawData(b"hello\r\n"), Line(b"get k")]


def test_raw_read_requested_before_data_arrives() -> None:
    framer = LineFramer()
    framer.read_exactly(3)
    assert framer.next_event() is NEED_DATA
    framer.receive_data(b"ab")
    assert framer.next_event() is NEED_DATA
    framer.receive_data(b"cde\n")
    assert drain(framer) == [RawData(b"abc"), Line(b"de")]


def test_raw_read_of_zero_bytes_is_immediate() -> None:
    framer = LineFramer()
    framer.read_exactly(0)
    assert framer.next_event() == RawData(b"")
    framer.receive_data(b"x\n")
    assert drain(framer) == [Line(b"x")]


def test_raw_read_after_too_long_starts_after_the_overlong_line() -> None:
    framer = LineFramer(b"\n", 3)
    framer.receive_data(b"toolong")
    assert drain(framer) == [LineTooLong(3)]
    framer.read_exactly(2)
    framer.receive_data(b"line\nRAW\n")
    assert drain(framer) == [RawData(b"RA"), Line(b"W")]


def test_eof_during_raw_read_gives_partial_tail() -> None:
    framer = LineFramer(b"\r\n")
    framer.receive_data(b"set k 5\r\nhel")
    assert framer.next_event() == Line(b"set k 5")
    framer.read_exactly(7)
    assert framer.next_event() is NEED_DATA
    framer.receive_data(b"")
    assert framer.next_event() == EndOfInput(b"hel")
    assert framer.next_event() is NEED_DATA


def test_read_exactly_rejects_negative_length() -> None:
    with pytest.raises(ValueError):
        LineFramer().read_exactly(-1)


def test_read_exactly_while_pending_raises() -> None:
    framer = LineFramer()
    framer.read_exactly(5)
    with pytest.raises(RuntimeError):
        framer.read_exactly(1)
    framer.receive_data(b"12345")
    assert framer.next_event() == RawData(b"12345")
    framer.read_exactly(1)


@FAST
@given(
    st.sampled_from(DELIMITERS),
    st.lists(
        st.one_of(
            st.binary(max_size=8).map(lambda b: ("line", b)),
            st.binary(max_size=12).map(lambda b: ("raw", b)),
        ),
        max_size=8,
    ),
    st.data(),
)
def test_mixed_lines_and_raw_blocks_any_chunking(
    delimiter: bytes,
    items: list[tuple[str, bytes]],
    data: st.DataObject,
) -> None:
    framer = LineFramer(delimiter, 16)
    stream = b""
    expected: list[Event] = []
    for kind, payload in items:
        if kind == "raw":
            header = b"R%d" % len(payload)
            stream += header + delimiter + payload
            expected += [Line(header), RawData(payload)]
        elif delimiter not in payload and not payload.startswith(b"R"):
            try:
                stream += framer.frame(payload)
            except ValueError:
                continue
            expected.append(Line(payload))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    events: list[Event] = []
    for chunk in [*split_at(stream, cuts), b""]:
        framer.receive_data(chunk)
        while (event := framer.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, Line) and event.data.startswith(b"R"):
                framer.read_exactly(int(event.data[1:]))
    assert events == [*expected, EndOfInput(b"")]


# -- raw hand-off ------------------------------------------------------------


def test_take_buffered_returns_unconsumed_bytes() -> None:
    framer = LineFramer(b"\r\n")
    framer.receive_data(b"STARTTLS\r\n\x16\x03\x01binary\r\nstuff")
    assert framer.next_event() == Line(b"STARTTLS")
    assert framer.take_buffered() == b"\x16\x03\x01binary\r\nstuff"
    assert framer.buffered == 0
    assert framer.next_event() is NEED_DATA
    framer.receive_data(b"fresh\r\n")
    assert drain(framer) == [Line(b"fresh")]


def test_take_buffered_cancels_pending_raw_read() -> None:
    framer = LineFramer()
    framer.read_exactly(10)
    framer.receive_data(b"abc")
    assert framer.take_buffered() == b"abc"
    framer.receive_data(b"line\n")
    assert drain(framer) == [Line(b"line")]


def test_take_buffered_resets_discard_state() -> None:
    framer = LineFramer(b"\r\n", 4)
    framer.receive_data(b"far too long\r")
    assert drain(framer) == [LineTooLong(4)]
    # Only the possible start of a split delimiter was kept.
    assert framer.take_buffered() == b"\r"
    framer.receive_data(b"\nnew\r\n")
    assert drain(framer) == [Line(b"\nnew")]


def test_take_buffered_then_eof() -> None:
    framer = LineFramer()
    framer.receive_data(b"rest")
    assert framer.take_buffered() == b"rest"
    framer.receive_data(b"")
    assert drain(framer) == [EndOfInput(b"")]


# -- outbound framing --------------------------------------------------------


def test_frame_appends_delimiter() -> None:
    assert LineFramer().frame(b"hi") == b"hi\n"
    assert LineFramer(b"\r\n").frame(b"") == b"\r\n"
    assert LineFramer(b"END").frame(bytearray(b"EN")) == b"ENEND"


@pytest.mark.parametrize(
    ("delimiter", "line"),
    [
        (b"\n", b"a\nb"),
        (b"\r\n", b"\r\n"),
        (b"END", b"theEND"),
        # Would be read back as b"a" followed by a stray b"\r\n".
        (b"\r\n\r\n", b"a\r\n"),
    ],
)
def test_frame_refuses_line_containing_delimiter(delimiter: bytes, line: bytes) -> None:
    with pytest.raises(ValueError):
        LineFramer(delimiter).frame(line)


# -- construction and basics -------------------------------------------------


@pytest.mark.parametrize("delimiter", [b"", "\n", bytearray(b"\n"), None])
def test_constructor_rejects_bad_delimiter(delimiter: object) -> None:
    with pytest.raises(ValueError, match="delimiter"):
        LineFramer(delimiter)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_line_length", [0, -1, 1.5, "10", True, None])
def test_constructor_rejects_bad_max_line_length(max_line_length: object) -> None:
    with pytest.raises(ValueError, match="max_line_length"):
        LineFramer(max_line_length=max_line_length)  # type: ignore[arg-type]


def test_properties_are_read_only() -> None:
    framer = LineFramer(b"\r\n", 7)
    assert framer.delimiter == b"\r\n"
    assert framer.max_line_length == 7
    with pytest.raises(AttributeError):
        framer.delimiter = b"\n"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        framer.max_line_length = 8  # type: ignore[misc]


def test_accepts_bytearray_and_memoryview() -> None:
    framer = LineFramer()
    framer.receive_data(bytearray(b"a\nb"))
    framer.receive_data(memoryview(b"xc\nd")[1:])
    framer.receive_data(memoryview(b""))
    assert drain(framer) == [Line(b"a"), Line(b"bc"), EndOfInput(b"d")]


def test_need_data_is_a_named_singleton() -> None:
    assert NEED_DATA is not None
    assert not isinstance(NEED_DATA, str)
    assert repr(NEED_DATA) == "NEED_DATA"
    assert lines.NEED_DATA is NEED_DATA


def test_events_are_frozen_values() -> None:
    assert Line(b"a") == Line(b"a")
    assert hash(RawData(b"a")) == hash(RawData(b"a"))
    with pytest.raises(AttributeError):
        Line(b"a").data = b"b"  # type: ignore[misc]


def test_many_pipelined_lines_in_one_feed() -> None:
    data = b"".join(b"line %d\r\n" % i for i in range(1000))
    framer = LineFramer(b"\r\n")
    framer.receive_data(data)
    assert drain(framer) == [Line(b"line %d" % i) for i in range(1000)]
    assert framer.buffered == 0


def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(lines, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# -- linear work -------------------------------------------------------------


class _CountingBuffer(bytearray):
    """A bytearray that counts the bytes its searches and compactions touch."""

    scanned = 0
    moved = 0

    def find(  # type: ignore[override]
        self, sub: bytes, start: int = 0, end: int | None = None
    ) -> int:
        index = super().find(sub, start, end)
        stop = len(self) if end is None else min(end, len(self))
        self.scanned += max(0, (index + len(sub) if index >= 0 else stop) - start)
        return index

    def __delitem__(self, key: int | slice) -> None:  # type: ignore[override]
        super().__delitem__(key)
        self.moved += len(self)


def _counting_framer(delimiter: bytes, cap: int) -> tuple[LineFramer, _CountingBuffer]:
    framer = LineFramer(delimiter, cap)
    buf = _CountingBuffer()
    framer._buf = buf  # white-box: count work, not time
    return framer, buf


@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n\r\n"])
def test_byte_at_a_time_search_is_linear(delimiter: bytes) -> None:
    size = 5000
    framer, buf = _counting_framer(delimiter, size)
    events: list[Event] = []
    for byte in b"q" * size + delimiter:
        framer.receive_data(bytes([byte]))
        events += drain(framer)
    framer.receive_data(b"")
    events += drain(framer)
    assert events == [Line(b"q" * size), EndOfInput(b"")]
    # Rescanning the buffer on every feed would cover about size**2 / 2.
    assert buf.scanned <= len(delimiter) * (size + len(delimiter))


def test_pipelined_lines_are_linear() -> None:
    framer, buf = _counting_framer(b"\r\n", 100)
    total = 0
    for batch in range(20):
        data = b"".join(b"line %d\r\n" % i for i in range(1000))
        total += len(data)
        framer.receive_data(data + b"partial %d" % batch)
        assert len(drain(framer)) == 1000
    assert buf.scanned <= 2 * total
    # Consumed bytes are dropped in bulk, not once per line.
    assert buf.moved <= total


@pytest.mark.parametrize("delimiter", [b"\r\n", b"\r\n\r\n"])
def test_consumed_bytes_are_released(delimiter: bytes) -> None:
    framer, buf = _counting_framer(delimiter, 1024)
    for _ in range(160):
        # The trailing partial line means the buffer is never fully consumed.
        framer.receive_data(b"x" * 65536 + delimiter + b"ok" + delimiter + b"pa")
        assert drain(framer) == [LineTooLong(1024), Line(b"ok")]
        # The backing store, not just the unconsumed part, stays bounded.
        assert len(buf) <= 2 * 65536


def test_endless_line_search_is_linear() -> None:
    framer, buf = _counting_framer(b"\r\n", 100)
    for _ in range(10000):
        framer.receive_data(b"x")
        drain(framer)
    assert buf.scanned <= 3 * 10000


def test_a_chunk_that_is_one_line_behaves_like_any_other_input() -> None:
    # The framer keeps such a chunk aside instead of buffering it; every
    # other call must still see it as ordinary received bytes.
    framer = LineFramer(b"\r\n", 8)
    framer.receive_data(b"get k\r\n")
    assert framer.buffered == 7
    assert not framer.idle
    framer.receive_data(b"get j\r\n")  # a second chunk before draining
    assert framer.next_event() == Line(b"get k")
    assert framer.next_event() == Line(b"get j")
    assert framer.next_event() is NEED_DATA
    assert framer.idle

    framer.receive_data(b"hello\r\n")  # read as a raw block, not a line
    framer.read_exactly(5)
    assert framer.next_event() == RawData(b"hello")
    assert framer.next_event() == Line(b"")  # what followed the block

    framer = LineFramer(b"\n", 8)
    framer.receive_data(b"taken\n")
    assert framer.take_buffered() == b"taken\n"
    assert framer.next_event() is NEED_DATA

    framer.receive_data(b"last\n")
    framer.receive_data(b"")
    assert framer.next_event() == Line(b"last")
    assert framer.next_event() == EndOfInput(b"")

    framer = LineFramer(b"\n", 3)
    framer.receive_data(b"long\n")  # over the cap: not kept aside
    assert framer.next_event() == LineTooLong(3)
