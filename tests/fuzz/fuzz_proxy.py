"""Fuzzes `tornado_echo.proxy_header.ProxyHeaderParser` with atheris (libFuzzer).

Run it for a bounded time; it stops by itself and fails on the first crash::

    pip install atheris
    python tests/fuzz/fuzz_proxy.py -max_total_time=5 -rss_limit_mb=1024

Each input picks a start (nothing, the start of a v1 line, the v2 signature
alone or with a command and family), a ``max_v2_payload``, whether a v2
length field is made to match the bytes after it, and a point at which the
whole is split in two: that way a few seconds get past the signatures and
into address and TLV parsing without a seed corpus. The parser may raise
`ProxyHeaderError` and nothing else, takes no more than it was given, takes
all of it while the header is incomplete, and never holds more than its
documented bound.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from tornado_echo.proxy_header import (
        V1_MAX_LENGTH,
        ProxyHeaderError,
        ProxyHeaderParser,
    )

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
STARTS = [
    b"",
    b"PROXY ",
    b"PROXY TCP4 ",
    b"PROXY TCP6 ",
    SIGNATURE,
    SIGNATURE + b"\x21\x11",
    SIGNATURE + b"\x21\x21",
    SIGNATURE + b"\x20\x00",
]
CAPS = [0, 12, 216, 300, 2048]


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    start = fdp.PickValueInList(STARTS)
    parser = ProxyHeaderParser(max_v2_payload=fdp.PickValueInList(CAPS))
    split = fdp.ConsumeIntInRange(0, 255)
    fit = fdp.ConsumeBool()
    body = start + fdp.ConsumeBytes(fdp.remaining_bytes())
    if fit and body.startswith(SIGNATURE) and len(body) >= 16:
        # Nearly every random v2 length is refused at once; one that matches
        # the bytes that follow gets into address and TLV parsing.
        length = min(len(body) - 16, 0xFFFF).to_bytes(2, "big")
        body = body[:14] + length + body[16:]
    # A v1 line that is still incomplete holds at most 106 bytes: the 107th
    # either ends it or fails it. The same goes for v2 and its whole length.
    limit = V1_MAX_LENGTH - 1 if body[:1] == b"P" else 15 + parser.max_v2_payload
    for chunk in (body[:split], body[split:]):
        try:
            taken = parser.receive(chunk)
        except ProxyHeaderError:
            assert parser.buffered == 0 and not parser.done
            return
        assert 0 <= taken <= len(chunk), (taken, len(chunk))
        if parser.done:
            assert parser.header is not None and parser.buffered == 0
        else:
            # A driver that peeks must never be handed the same bytes twice.
            assert taken == len(chunk), (taken, len(chunk))
            assert parser.buffered <= limit, (parser.buffered, limit)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
