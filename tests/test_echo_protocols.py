"""The sans-IO echo protocols that both drivers run (no sockets here)."""

from __future__ import annotations

import doctest
import logging

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tornado_echo import echo
from tornado_echo.echo import ByteEcho, LineEcho
from tornado_echo.lines import NEED_DATA, EndOfInput, Line, LineFramer


def run(protocol: ByteEcho | LineEcho, chunks: list[bytes]) -> bytes:
    """Feed ``chunks`` then EOF the way a driver does; return all it sends."""
    out = b""
    for chunk in chunks:
        if protocol.finished:
            break
        out += protocol.receive_data(chunk)
    if not protocol.finished:
        out += protocol.receive_data(b"")
    assert protocol.finished
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [
        data[a:b]
        for a, b in zip([0, *points], [*points, len(data)], strict=True)
        if b > a
    ]


def test_module_example_runs() -> None:
    assert doctest.testmod(echo).failed == 0


@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=20))
def test_byte_echo_returns_every_byte(data: bytes, cuts: list[int]) -> None:
    assert run(ByteEcho(), split(data, cuts)) == data


lines = st.lists(
    st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=20
)


@settings(max_examples=200, deadline=None)
@given(lines, st.binary(max_size=12), st.lists(st.integers(0, 300), max_size=10))
def test_line_echo_is_the_same_however_the_input_is_split(
    body: list[bytes], tail: bytes, cuts: list[int]
) -> None:
    data = b"".join(line + b"\n" for line in body) + tail.replace(b"\n", b"")
    logging.getLogger("tornado_echo.lines").disabled = True
    try:
        for policy in ("close", "skip", "reply"):
            whole = run(LineEcho(max_line_length=8, on_long_line=policy), [data])
            pieces = run(
                LineEcho(max_line_length=8, on_long_line=policy), split(data, cuts)
            )
            assert pieces == whole
    finally:
        logging.getLogger("tornado_echo.lines").disabled = False


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("close", b"ok\n"),
        ("skip", b"ok\nafter\ntail"),
        ("reply", b"ok\nERROR line too long\nafter\ntail"),
    ],
)
def test_long_line_policies(
    policy: str, expected: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    protocol = LineEcho("127.0.0.1:1", max_line_length=5, on_long_line=policy)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, "tornado_echo.lines"):
        assert run(protocol, [b"ok\nlonger\naft", b"er\ntail"]) == expected
    assert caplog.messages == [
        f"127.0.0.1:1: line longer than 5 bytes (policy: {policy})"
    ]


def test_bad_policy_is_refused_clearly() -> None:
    with pytest.raises(
        ValueError, match="on_long_line must be one of close, skip, reply"
    ):
        LineEcho(on_long_line="drop")  # type: ignore[arg-type]


def reference_line_echo(
    delimiter: bytes, max_line_length: int, chunks: list[bytes]
) -> list[bytes]:
    """What `LineEcho` must send after each chunk, from the framer's events
    alone (policy ``skip``), with none of LineEcho's shortcuts."""
    framer = LineFramer(delimiter, max_line_length)
    sent = []
    for chunk in [*chunks, b""]:
        framer.receive_data(chunk)
        out = b""
        while (event := framer.next_event()) is not NEED_DATA:
            if isinstance(event, Line):
                out += event.data + delimiter
            elif isinstance(event, EndOfInput):
                out += event.tail
        sent.append(out)
    return sent


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([b"\n", b"\r\n", b"aa", b"aba"]),
    st.lists(st.sampled_from([b"a", b"b", b"\r", b"\n", b"xyz"]), max_size=40),
    st.lists(st.integers(0, 60), max_size=10),
)
@example(b"aa", [b"a", b"a", b"a"], [])  # one line, then the start of the next
@example(b"\r\n", [b"xyz", b"xyz", b"xyz", b"\r", b"\n"], [])  # one line too long
def test_line_echo_answers_each_chunk_exactly_as_the_framer_frames_it(
    delimiter: bytes, pieces: list[bytes], cuts: list[int]
) -> None:
    # LineEcho returns a chunk of whole lines as it is, without framing
    # it; this checks that shortcut against the framer, chunk by chunk,
    # including delimiters that overlap themselves and overlong lines.
    chunks = split(b"".join(pieces), cuts)
    expected = reference_line_echo(delimiter, 6, chunks)
    protocol = LineEcho(delimiter=delimiter, max_line_length=6, on_long_line="skip")
    logging.getLogger("tornado_echo.lines").disabled = True
    try:
        got = [protocol.receive_data(chunk) for chunk in [*chunks, b""]]
    finally:
        logging.getLogger("tornado_echo.lines").disabled = False
    assert got == expected
