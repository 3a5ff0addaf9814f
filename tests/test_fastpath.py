"""Which stream the servers use, and what only the fast path promises.

The behavioural suite runs on both paths: as is (the fast path, on the
Tornado versions it was checked against) and with
``TORNADO_ECHO_FASTPATH=0`` (documented hooks only), as ``.ci/run`` does.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import tornado
from clients import TIMEOUT, connect
from conftest import StartServer

from tornado_echo import _fastpath
from tornado_echo._fastpath import FastPathIOStream, fast_path_enabled, stream_class
from tornado_echo._halfclose import HalfCloseIOStream
from tornado_echo.server import EchoServer


def test_fast_path_only_on_checked_tornado_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(_fastpath.ENV_VAR, raising=False)
    monkeypatch.setattr(tornado, "version_info", (6, 6, 1, 0))
    assert stream_class() is FastPathIOStream
    monkeypatch.setattr(tornado, "version_info", (6, 5, 2, 0))
    assert stream_class() is FastPathIOStream
    for unchecked in [(6, 7, 0, 0), (7, 0, 0, 0), (6, 4, 2, 0)]:
        monkeypatch.setattr(tornado, "version_info", unchecked)
        assert stream_class() is HalfCloseIOStream


def test_environment_variable_forces_the_public_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tornado, "version_info", (6, 6, 1, 0))
    monkeypatch.setenv(_fastpath.ENV_VAR, "0")
    assert stream_class() is HalfCloseIOStream
    monkeypatch.setenv(_fastpath.ENV_VAR, "1")
    assert stream_class() is FastPathIOStream


class _Recording(EchoServer):
    """Keeps the streams it serves."""

    def __init__(self) -> None:
        super().__init__()
        self.streams: list[Any] = []

    async def serve_stream(self, stream: Any, address: Any) -> None:
        self.streams.append(stream)
        await super().serve_stream(stream, address)


async def test_server_streams_are_of_the_selected_class(
    start_tcp_server: StartServer,
) -> None:
    server = _Recording()
    port = (await start_tcp_server(server)).port
    reader, writer = await connect(port)
    try:
        writer.write(b"x")
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(1) == b"x"
        [stream] = server.streams
        assert type(stream) is stream_class()
    finally:
        writer.close()


@pytest.mark.skipif(not fast_path_enabled(), reason="the fast path is off")
async def test_bytes_reaching_an_abandoned_read_are_kept_for_the_next() -> None:
    ours, theirs = socket.socketpair()
    stream = FastPathIOStream(ours)
    try:
        abandoned = stream.read_bytes(100, partial=True)
        assert isinstance(abandoned, asyncio.Future)
        abandoned.cancel()  # as a timeout around the read would
        theirs.sendall(b"kept")
        async with asyncio.timeout(TIMEOUT):
            while stream.reading():
                await asyncio.sleep(0.01)
            assert await stream.read_bytes(100, partial=True) == b"kept"
    finally:
        stream.close()
        theirs.close()
