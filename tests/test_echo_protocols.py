"""The sans-IO echo protocols that both drivers run (no sockets here)."""

from __future__ import annotations

import doctest
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tornado_echo import echo
from tornado_echo.echo import ByteEcho, LineEcho


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
