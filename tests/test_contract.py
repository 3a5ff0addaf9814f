"""The public API as a contract: every keyword is checked, every setting works.

A misspelled keyword must be a `TypeError` that names it, never a setting
silently dropped; every documented `LineServer` setting can be given to
the constructor and takes effect on the wire; a bad value fails when the
object is built, with one sentence.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Any

import pytest
from clients import HOST, TIMEOUT, roundtrip
from conftest import Start

import tornado_echo
from tornado_echo import (
    EchoServer,
    Limits,
    LineConnection,
    LineEcho,
    LineServer,
    ListenOn,
)
from tornado_echo.compat import RawEchoServer
from tornado_echo.listen import ListenError, bind
from tornado_echo.proxy_protocol import ProxyProtocol
from tornado_echo.testing import LineClient, start_server
from tornado_echo.udp import UdpEchoServer, UdpLimits


class Echo(LineServer):
    async def handle_line(self, conn: LineConnection, line: bytes) -> bytes:
        return line


def _misspelt(call: Callable[[], Any], keyword: str) -> None:
    with pytest.raises(TypeError, match=keyword):
        call()


async def test_every_server_refuses_a_misspelled_keyword() -> None:
    # Each of these once ran with the default instead.
    _misspelt(lambda: EchoServer(limit=Limits(idle_timeout=1)), "limit")
    _misspelt(lambda: EchoServer(proxy_protocl=True), "proxy_protocl")
    _misspelt(lambda: LineServer(max_line_lenght=10), "max_line_lenght")
    _misspelt(lambda: Echo(delimeter=b"\r\n"), "delimeter")
    _misspelt(lambda: RawEchoServer(limit=Limits()), "limit")
    _misspelt(lambda: UdpEchoServer(limit=UdpLimits()), "limit")
    _misspelt(lambda: EchoServer(ehco=LineEcho), "ehco")
    _misspelt(lambda: RawEchoServer(high_water=1), "high_water")
    _misspelt(lambda: Limits(idle_timout=1), "idle_timout")
    _misspelt(lambda: ProxyProtocol(trust=["127.0.0.1/32"]), "trust")


async def test_every_entry_point_refuses_a_misspelled_keyword() -> None:
    # Refused at the call, before anything is bound or forked.
    _misspelt(lambda: tornado_echo.run(port=0, procesess=2), "procesess")
    _misspelt(lambda: tornado_echo.run(port=0, server_class=Echo), "server_class")
    _misspelt(lambda: tornado_echo.serve(Echo, shutdown_timout=1), "shutdown_timout")
    _misspelt(lambda: ListenOn(prot=0), "prot")
    _misspelt(lambda: start_server(Echo, hots=HOST), "hots")
    _misspelt(lambda: LineClient.connect(HOST, 1, delimeter=b"\r\n"), "delimeter")


async def test_bad_values_fail_when_the_server_is_built() -> None:
    cases: list[tuple[Callable[[], Any], type[Exception], str]] = [
        (lambda: EchoServer(limits={"idle_timeout": 1}), TypeError, "Limits"),  # type: ignore[arg-type]
        (lambda: EchoServer(read_chunk_size=0), ValueError, "read_chunk_size"),
        (lambda: EchoServer(proxy_protocol="yes"), TypeError, "proxy_protocol"),  # type: ignore[arg-type]
        (lambda: EchoServer(ssl_options="cert.pem"), TypeError, "SSLContext"),  # type: ignore[arg-type]
        (lambda: EchoServer(log_connections=1), TypeError, "log_connections"),  # type: ignore[arg-type]
        (lambda: Echo(on_long_line="drop"), ValueError, "on_long_line"),  # type: ignore[arg-type]
        (lambda: Echo(encoding="no-such-codec"), ValueError, "encoding"),
        (lambda: Echo(long_line_reply=42), TypeError, "long_line_reply"),  # type: ignore[arg-type]
        (lambda: Echo(encoding="ascii", long_line_reply="é"), ValueError, "ascii"),
        (lambda: Echo(connection_class=dict), TypeError, "connection_class"),  # type: ignore[arg-type]
        (lambda: Echo(partial_line_check=0), ValueError, "partial_line_check"),
        (lambda: Echo(delimiter=b""), ValueError, "delimiter"),
        (lambda: Echo(max_line_length=0), ValueError, "max_line_length"),
        (lambda: UdpEchoServer(limits=Limits()), TypeError, "UdpLimits"),  # type: ignore[arg-type]
        (lambda: ListenOn(port=70000), ValueError, "port"),
        (lambda: ListenOn(host=5), TypeError, "host"),  # type: ignore[arg-type]
        (lambda: ListenOn(unix_mode=0o1777), ValueError, "unix_mode"),
        (lambda: ListenOn(port=None), ValueError, "nothing to listen on"),
        (lambda: ListenOn(port=None, unix="/tmp/x", udp=True), ValueError, "udp"),
    ]
    for build, kind, word in cases:
        with pytest.raises(kind, match=word) as failure:
            build()
        # One sentence: no line breaks, no traceback text.
        assert "\n" not in str(failure.value), failure.value


class Marked(LineConnection):
    """A connection class given to the constructor; it marks each reply."""


class Settings(LineServer):
    async def handle_line(self, conn: LineConnection, line: bytes) -> str:
        mark = "*" if isinstance(conn, Marked) else ""
        return mark + line.decode(self.encoding).upper()

    def check_partial_line(self, conn: LineConnection, head: bytes) -> None:
        if head.startswith(b"REFUSE"):
            conn.close()


async def test_every_line_server_setting_takes_effect_from_the_constructor(
    start: Start,
) -> None:
    port = await start(
        Settings(
            delimiter=b"\r\n",
            max_line_length=12,
            on_long_line="reply",
            long_line_reply="E_TOO_LONG",
            encoding="latin-1",
            connection_class=Marked,
        )
    )
    request = b"abc\r\n" + b"x" * 40 + b"\r\n" + "caf\xe9\r\n".encode("latin-1")
    got = await roundtrip(port, request)
    # The CRLF delimiter, the 12-byte cap with its reply policy and reply,
    # latin-1 both ways, and the connection class.
    assert got == b"*ABC\r\nE_TOO_LONG\r\n*CAF\xc9\r\n"


async def test_partial_line_check_from_the_constructor(start: Start) -> None:
    port = await start(Settings(partial_line_check=8))
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(HOST, port), TIMEOUT
    )
    try:
        # No delimiter: only the check can see it, and it refuses it.
        writer.write(b"REFUSE" + b"y" * 100)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    finally:
        writer.close()
    # None, given explicitly, switches the class attribute's check off.
    assert Settings(partial_line_check=None).partial_line_check is None
    assert Settings().partial_line_check is None


def test_one_base_error_and_a_one_sentence_listen_error() -> None:
    for name in (
        "errors.Error",
        "listen.ListenError",
        "loops.LoopUnavailableError",
        "tls.TLSConfigError",
        "systemd.ActivationError",
        "proxy_header.ProxyHeaderError",
        "runner.WorkersFailedError",
        "lineserver.IncompleteReadError",
    ):
        module, cls = name.rsplit(".", 1)
        error = getattr(__import__(f"tornado_echo.{module}", fromlist=[cls]), cls)
        assert issubclass(error, tornado_echo.Error), name
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as failure:
            bind(port, HOST)
    assert failure.value.errno == errno.EADDRINUSE
    assert str(failure.value).startswith(f"cannot listen on {HOST}:{port}: ")
    assert "[Errno" not in str(failure.value)


def test_the_package_exports_what_users_reach_for() -> None:
    from tornado_echo import compat, echo, lines, proxy_protocol, tls, udp

    for name, module in {
        "RawEchoServer": compat,
        "ByteEcho": echo,
        "LineEcho": echo,
        "LineFramer": lines,
        "ProxyProtocol": proxy_protocol,
        "server_context": tls,
        "UdpEchoServer": udp,
        "UdpLimits": udp,
    }.items():
        assert name in tornado_echo.__all__, name
        # The same object as at its home, not a copy.
        assert getattr(tornado_echo, name) is getattr(module, name), name
    with pytest.raises(AttributeError, match="EchoSever"):
        tornado_echo.EchoSever  # noqa: B018


def test_the_long_line_policy_has_one_home() -> None:
    from pathlib import Path

    from tornado_echo import echo, lines, lineserver

    assert echo.LONG_LINE_POLICIES is lines.LONG_LINE_POLICIES
    assert lineserver.LongLinePolicy is lines.LongLinePolicy
    package = Path(lines.__file__).parent
    sources = {p.name: p.read_text() for p in package.glob("*.py")}
    # The policy's message and its log line are written once, in lines.
    for text in ("%s: line longer than", "on_long_line must be one of"):
        homes = [name for name, source in sources.items() if text in source]
        assert homes == ["lines.py"], (text, homes)


def _private_reaches(source: str) -> list[str]:
    """``x._name`` where ``x`` is not ``self``/``cls`` and ``_name`` is not this module's."""
    import ast

    tree = ast.parse(source)
    own: set[str] = set()
    reaches: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                own.add(node.attr)
            else:
                reaches.append((node.lineno, node.attr, ast.unparse(node)))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            own.add(node.value)  # names in __slots__
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            own.add(node.target.id)
    return [
        f"line {line}: {text}"
        for line, attr, text in reaches
        if attr not in own and text != "os._exit"
    ]


def test_no_module_reaches_into_another_modules_private_state() -> None:
    from pathlib import Path

    # A driver uses the lifecycle's contract (track_connection,
    # count_lines, add_buffered, untrack_connection), never its insides.
    package = Path(tornado_echo.__file__).parent
    found = {
        path.name: reaches
        for path in sorted(package.glob("*.py"))
        if (reaches := _private_reaches(path.read_text()))
    }
    assert found == {}
    # The check itself sees a reach when there is one.
    assert _private_reaches("def f(server):\n    server._buffered += 1\n") == [
        "line 2: server._buffered"
    ]


def _imports_of(source: str) -> set[str]:
    """The tornado_echo modules ``source`` imports, lazily or not, at run time."""
    import ast

    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in (
                "TYPE_CHECKING",
                "typing.TYPE_CHECKING",
            ):
                for other in child.orelse:
                    visit(other)
                continue  # for type checkers only: no cycle at run time
            if isinstance(child, ast.ImportFrom) and child.module:
                parts = child.module.split(".")
                if parts[0] == "tornado_echo" and len(parts) > 1:
                    found.add(parts[1])
            visit(child)

    visit(ast.parse(source))
    return found


def test_the_package_has_no_import_cycles() -> None:
    from pathlib import Path

    package = Path(tornado_echo.__file__).parent
    graph = {
        path.stem: _imports_of(path.read_text()) - {path.stem}
        for path in package.glob("*.py")
    }

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), list(graph.get(start, ()))
        while todo:
            module = todo.pop()
            if module == goal:
                return True
            if module not in seen:
                seen.add(module)
                todo += graph.get(module, ())
        return False

    cycles = sorted(m for m in graph if reaches(m, m))
    assert cycles == []
    # listen binds every kind of socket itself; udp uses it, not the reverse.
    assert "listen" in graph["udp"] and "udp" not in graph["listen"]


def _tornado_private_names() -> set[str]:
    """The underscored names of Tornado's streams and TCP server, instance state too."""
    from tornado.iostream import BaseIOStream, IOStream, SSLIOStream
    from tornado.tcpserver import TCPServer

    classes = (BaseIOStream, IOStream, SSLIOStream, TCPServer)
    names = {n for c in classes for n in dir(c) if n.startswith("_")}
    a, b = socket.socketpair()
    stream = IOStream(a)
    try:
        names |= {n for n in vars(stream) if n.startswith("_")}
    finally:
        stream.close()
        b.close()
    return {n for n in names if not n.startswith("__")}


def test_tornado_privates_are_touched_only_behind_the_fence() -> None:
    import ast
    import importlib
    from pathlib import Path

    from tornado.iostream import BaseIOStream
    from tornado.tcpserver import TCPServer

    private = _tornado_private_names()
    assert {"_read_buffer", "_handle_events", "_do_ssl_handshake"} <= private
    # _fastpath.py is the fence: checked versions only, with a public
    # fallback (TORNADO_ECHO_FASTPATH=0 runs the whole suite without it).
    package = Path(tornado_echo.__file__).parent
    touched: list[str] = []
    for path in sorted(package.glob("*.py")):
        if path.stem in ("_fastpath", "__main__"):
            continue
        module = importlib.import_module(f"tornado_echo.{path.stem}")
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            cls = getattr(module, node.name, None)
            if not (
                isinstance(cls, type) and issubclass(cls, (BaseIOStream, TCPServer))
            ):
                continue
            # In our subclasses of Tornado's classes: an override of, or a
            # use of, one of Tornado's underscored names.
            for sub in ast.walk(node):
                name = None
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = sub.name
                elif isinstance(sub, ast.Attribute) and ast.unparse(sub.value) in (
                    "self",
                    "super()",
                ):
                    name = sub.attr
                if name in private:
                    touched.append(f"{path.name}: {node.name}.{name}")
    assert touched == []


def test_other_tls_streams_keep_their_handshake_warnings() -> None:
    import logging

    import tornado_echo.tls  # noqa: F401 - installs the filter

    general = logging.getLogger("tornado.general")
    # Not one of our streams' descriptors: Tornado's WARNING goes through.
    record = logging.LogRecord(
        "tornado.general",
        logging.WARNING,
        __file__,
        1,
        "SSL Error on %s %s: %s",
        (1 << 30, ("192.0.2.1", 443), "wrong version number"),
        None,
    )
    assert general.filter(record)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("proxy", "proxy_header"),
        ("proxied", "proxy_protocol"),
        # Internal now: their old public names still resolve, with a warning.
        ("accept", "_accept"),
        ("lifecycle", "_lifecycle"),
        ("halfclose", "_halfclose"),
        ("fairness", "_fairness"),
        ("logs", "_logs"),
    ],
)
def test_the_moved_modules_still_work_with_a_warning(old: str, new: str) -> None:
    import importlib
    import warnings

    target = importlib.import_module(f"tornado_echo.{new}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = importlib.import_module(f"tornado_echo.{old}")  # silent
    assert target.__all__
    for name in target.__all__:
        with pytest.warns(
            DeprecationWarning, match=f"{target.__name__}: import {name}"
        ):
            assert getattr(module, name) is getattr(target, name), (old, name)
    with pytest.raises(AttributeError):
        module.not_a_name  # noqa: B018


async def test_serve_takes_a_server_and_where_to_listen() -> None:
    import functools

    from tornado_echo import LineEcho

    bound: list[Any] = []
    ready = asyncio.Event()

    def on_ready(addresses: Any) -> None:
        bound.extend(addresses)
        ready.set()

    echo = functools.partial(LineEcho, max_line_length=3, on_long_line="reply")
    server = functools.partial(EchoServer, echo=echo)
    task = asyncio.ensure_future(
        tornado_echo.serve(
            server,
            ListenOn(port=0, host=HOST),
            ready=on_ready,
            handle_signals=False,
            announce=False,
        )
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            await ready.wait()
        [(_, port)] = bound
        # The factory's settings took effect: its cap and its reply policy.
        got = await roundtrip(port, b"ab\ntoo long\n")
        assert got == b"ab\nERROR line too long\n"
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(TIMEOUT):
            await task
    # Sockets that are already listening are a place to listen too.
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]
    task = asyncio.ensure_future(
        tornado_echo.serve(EchoServer, [listener], handle_signals=False, announce=False)
    )
    try:
        assert await roundtrip(port, b"bytes") == b"bytes"
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(TIMEOUT):
            await task


def test_run_configures_servers_through_their_constructors() -> None:
    # An instance cannot take settings after it is built: run says where
    # they go, before binding anything.
    with pytest.raises(TypeError, match="constructor"):
        tornado_echo.run(port=0, server=object(), limits=Limits())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="impl"):
        tornado_echo.run(port=0, server=Echo, impl="compat")


async def test_settings_are_read_only_after_construction() -> None:
    server = EchoServer(limits=Limits(idle_timeout=5))
    assert server.limits.idle_timeout == 5
    for name, value in (
        ("limits", Limits()),
        ("proxy_protocol", True),
        ("log_connections", True),
    ):
        with pytest.raises(AttributeError):
            setattr(server, name, value)


async def test_the_old_protocol_keyword_still_works_with_a_warning() -> None:
    from tornado_echo import ByteEcho, LineEcho

    for make in (EchoServer, RawEchoServer):
        with pytest.warns(DeprecationWarning, match="echo="):
            server = make(protocol=LineEcho)
        assert server.echo is LineEcho
        assert make().echo is ByteEcho
