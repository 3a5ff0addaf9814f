"""TLS: echo over real loopback TLS, quiet handshake failures, the handshake
timeout, client certificates, and the CLI's TLS options and errors.

Certificates are made at test time by a throwaway `trustme` CA, so nothing
checked in can expire. In-process tests run every server over both drivers
that speak TLS (`.EchoServer` and a `.LineServer` subclass); the plugin's
teardown also checks that the server closed every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from _proc import PYTHON, connect, exchange, needs_tool, run, running_server
from clients import HOST, TIMEOUT, wait_closed_by_server
from clients import connect as plain_connect
from conftest import Start

from tornado_echo.echo import LineEcho
from tornado_echo.limits import Limits
from tornado_echo.lineserver import LineConnection, LineServer
from tornado_echo.server import EchoServer
from tornado_echo.tls import server_context

# ~300 KB of newline-terminated lines, so the line server echoes it whole too.
PAYLOAD = b"".join(os.urandom(500).hex().encode() + b"\n" for _ in range(300))

# What a browser or curl sends when pointed at the TLS port without https.
PLAIN_TEXT = b"GET / HTTP/1.0\r\n\r\n"


@dataclasses.dataclass(frozen=True)
class Pki:
    """PEM files from one test CA, and a client certificate it signed."""

    ca_file: str
    cert_file: str  # the server certificate chain, without the key
    key_file: str
    combined_file: str  # key and chain in one file
    other_key_file: str  # a valid key that does not match cert_file
    garbage_file: str
    client_cert: trustme.LeafCert

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the CA and checks the host name."""
        return ssl.create_default_context(cafile=self.ca_file)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert(HOST)

    def write(name: str, *blobs: trustme.Blob) -> str:
        path = folder / name
        path.write_bytes(b"".join(blob.bytes() for blob in blobs))
        return str(path)

    (folder / "garbage.pem").write_text("this is not a certificate\n")
    return Pki(
        ca_file=write("ca.pem", ca.cert_pem),
        cert_file=write("cert.pem", *server.cert_chain_pems),
        key_file=write("key.pem", server.private_key_pem),
        combined_file=write("combined.pem", server.private_key_and_cert_chain_pem),
        other_key_file=write("other-key.pem", ca.issue_cert(HOST).private_key_pem),
        garbage_file=str(folder / "garbage.pem"),
        client_cert=ca.issue_cert("client@example"),
    )


class LineEchoServer(LineServer):
    """The smallest line server: every line comes back as it was."""

    async def handle_line(self, conn: LineConnection, line: bytes) -> bytes:
        return line


SERVERS: dict[str, Callable[..., EchoServer | LineServer]] = {
    "EchoServer": EchoServer,
    "LineServer": LineEchoServer,
}


@pytest.fixture(params=sorted(SERVERS))
def make_server(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``make_server(**options)``: each driver that serves TLS."""
    return SERVERS[str(request.param)]


# -- clients -----------------------------------------------------------------


async def tls_connect(
    port: int, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(TIMEOUT):
        return await asyncio.open_connection(HOST, port, ssl=context)


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a client, waiting (bounded) for the TLS close to finish."""
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await writer.wait_closed()


async def exchange_on(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> bytes:
    """Send ``payload`` and read back as many bytes."""
    writer.write(payload)
    async with asyncio.timeout(TIMEOUT):
        return await reader.readexactly(len(payload))


async def tls_echo(port: int, context: ssl.SSLContext, payload: bytes) -> bytes:
    """Connect over TLS, send ``payload``, return as many bytes read back."""
    reader, writer = await tls_connect(port, context)
    try:
        return await exchange_on(reader, writer, payload)
    finally:
        await close(writer)


async def echo_refused(port: int, context: ssl.SSLContext) -> bytes:
    """What comes back for one line sent over TLS; b"" if the handshake or
    the connection failed (with TLS 1.3 the client may only learn that the
    server refused its certificate at the first read)."""
    try:
        reader, writer = await tls_connect(port, context)
        try:
            writer.write(b"let me in\n")
            async with asyncio.timeout(TIMEOUT):
                # The first bytes, or b"" at EOF: a server that wrongly
                # accepted the client answers at once.
                return await reader.read(65536)
        finally:
            await close(writer)
    except (ssl.SSLError, ConnectionError):
        return b""


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {TIMEOUT}s"
        await asyncio.sleep(0.01)


def handshake_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "handshake" in r.getMessage().lower()]


def assert_no_warnings(caplog: pytest.LogCaptureFixture) -> None:
    loud = [
        f"{r.name} {r.levelname}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.WARNING
    ]
    assert not loud, loud


def assert_one_handshake_failure(
    caplog: pytest.LogCaptureFixture, reason: str = ""
) -> None:
    """Exactly one record mentions the handshake: our DEBUG line."""
    records = handshake_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    [record] = records
    assert record.name == "tornado_echo.connection"
    assert record.levelno == logging.DEBUG
    message = record.getMessage()
    assert re.match(r"127\.0\.0\.1:\d+: TLS handshake failed: ", message), message
    assert reason in message


# -- in process --------------------------------------------------------------


async def test_tls_echo_is_exact_and_stats_count_application_bytes(
    pki: Pki, make_server: Callable[..., Any], start: Start
) -> None:
    server = make_server(ssl_options=server_context(pki.cert_file, pki.key_file))
    port = await start(server)
    assert await tls_echo(port, pki.client_context(), PAYLOAD) == PAYLOAD
    await until(lambda: server.connection_count == 0, "closed by the server")
    stats = server.stats
    # Exactly the plaintext: TLS records and handshakes are not counted.
    assert (stats.bytes_in, stats.bytes_out) == (len(PAYLOAD), len(PAYLOAD))
    assert stats.handshake_failures == 0


@pytest.mark.parametrize("form", ["SSLContext", "dict"])
async def test_standard_ssl_options_give_a_tls_echo(
    pki: Pki, form: str, start: Start
) -> None:
    # What any TCPServer accepts, not only server_context's result.
    options: ssl.SSLContext | dict[str, Any]
    if form == "dict":
        options = {"certfile": pki.cert_file, "keyfile": pki.key_file}
    else:
        options = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        options.load_cert_chain(pki.cert_file, pki.key_file)
    port = await start(EchoServer(ssl_options=options))
    assert await tls_echo(port, pki.client_context(), PAYLOAD) == PAYLOAD


async def test_plain_text_to_tls_port_closes_quietly_and_others_are_served(
    pki: Pki,
    make_server: Callable[..., Any],
    start: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = make_server(ssl_options=server_context(pki.cert_file, pki.key_file))
    port = await start(server)

    reader, writer = await plain_connect(port)
    writer.write(PLAIN_TEXT)
    # EOF or a reset: either way nothing came back.
    assert await wait_closed_by_server(reader) == b""
    writer.close()
    await until(lambda: server.connection_count == 0, "closed by the server")

    assert server.stats.handshake_failures == 1
    assert_no_warnings(caplog)
    assert_one_handshake_failure(caplog)
    assert await tls_echo(port, pki.client_context(), b"still here\n") == (
        b"still here\n"
    )
    assert server.stats.handshake_failures == 1


async def test_silent_client_is_closed_after_handshake_timeout_but_idle_tls_is_not(
    pki: Pki,
    make_server: Callable[..., Any],
    start: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    timeout = 0.3
    server = make_server(
        ssl_options=server_context(pki.cert_file, pki.key_file),
        limits=Limits(handshake_timeout=timeout),
    )
    port = await start(server)

    connected = time.monotonic()
    silent_reader, silent_writer = await plain_connect(port)
    reader, writer = await tls_connect(port, pki.client_context())
    handshaken = time.monotonic()
    try:
        async with asyncio.timeout(5.0):
            assert await wait_closed_by_server(silent_reader) == b""
        closed_after = time.monotonic() - connected
        assert closed_after >= timeout * 0.9
        # The handshake timeout must not apply after the handshake: stay
        # idle for twice as long, then echo.
        await asyncio.sleep(2 * timeout - (time.monotonic() - handshaken))
        assert await exchange_on(reader, writer, b"after a pause\n") == (
            b"after a pause\n"
        )
    finally:
        silent_writer.close()
        await close(writer)

    assert server.stats.handshake_failures == 1
    assert_no_warnings(caplog)
    assert_one_handshake_failure(caplog, f"not finished within {timeout:g}s")


@pytest.mark.parametrize("client", ["no certificate", "certificate from another CA"])
async def test_client_certificate_required_refuses_clients_without_a_signed_one(
    pki: Pki,
    make_server: Callable[..., Any],
    start: Start,
    caplog: pytest.LogCaptureFixture,
    client: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    options = server_context(pki.cert_file, pki.key_file, ca_certs=pki.ca_file)
    server = make_server(ssl_options=options)
    port = await start(server)

    refused = pki.client_context()
    if client == "certificate from another CA":
        trustme.CA().issue_cert("client@example").configure_cert(refused)
    assert await echo_refused(port, refused) == b""
    await until(lambda: server.connection_count == 0, "closed by the server")
    assert server.stats.handshake_failures == 1
    # The client side may log its own failure; the server must not warn.
    assert_no_warnings(caplog)
    assert_one_handshake_failure(caplog)

    accepted = pki.client_context()
    pki.client_cert.configure_cert(accepted)
    assert await tls_echo(port, accepted, b"signed\n") == b"signed\n"
    assert server.stats.handshake_failures == 1


# -- server_context ------------------------------------------------------------


# -- the end of a TLS stream -------------------------------------------------


class QuitServer(LineServer):
    """Echoes lines; ``quit`` ends the conversation from the server's side."""

    async def handle_line(self, conn: LineConnection, line: bytes) -> bytes | None:
        if line == b"quit":
            conn.finish()
            return b"bye"
        return line


def strict_client(pki: Pki, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that reports a close without ``close_notify`` as an error."""
    context = pki.client_context()
    context.maximum_version = version
    return context


def blocking_exchange(
    port: int, context: ssl.SSLContext, payload: bytes, *, unwrap: bool
) -> bytes:
    """Send ``payload``, optionally our ``close_notify``, read to a clean end.

    Runs in a thread. Raises `ssl.SSLEOFError` if the server closes without
    its own ``close_notify``.
    """
    raw = socket.create_connection((HOST, port), timeout=TIMEOUT)
    with context.wrap_socket(
        raw, server_hostname=HOST, suppress_ragged_eofs=False
    ) as sock:
        sock.sendall(payload)
        received = b""
        if unwrap:
            # Reads up to the server's close_notify, which must come.
            while not received.endswith(payload.rpartition(b"\n")[0] + b"\n"):
                received += sock.recv(65536)
            sock.unwrap()
            return received
        while chunk := sock.recv(65536):
            received += chunk
        return received


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["1.2", "1.3"]
)
async def test_the_server_ends_every_tls_session_with_close_notify(
    pki: Pki, start: Start, version: ssl.TLSVersion
) -> None:
    context = server_context(pki.cert_file, pki.key_file)
    client = strict_client(pki, version)
    loop = asyncio.get_running_loop()
    # The server ends it: a LineServer's finish().
    port = await start(QuitServer(ssl_options=context))
    got = await loop.run_in_executor(
        None, lambda: blocking_exchange(port, client, b"one\nquit\n", unwrap=False)
    )
    assert got == b"one\nbye\n"
    # The server ends it: the idle timeout.
    port = await start(EchoServer(ssl_options=context, limits=Limits(idle_timeout=0.3)))
    got = await loop.run_in_executor(
        None, lambda: blocking_exchange(port, client, b"hi", unwrap=False)
    )
    assert got == b"hi"
    # The client ends it: the server's close_notify answers the client's.
    port = await start(EchoServer(ssl_options=context, echo=LineEcho))
    got = await loop.run_in_executor(
        None, lambda: blocking_exchange(port, client, b"one\ntwo\n", unwrap=True)
    )
    assert got == b"one\ntwo\n"


@needs_tool("gnutls-cli", "gnutls-bin")
@pytest.mark.parametrize(
    ("priority", "tail"),
    [("NORMAL", b"tail"), ("NORMAL:-VERS-ALL:+VERS-TLS1.2", b"")],
    ids=["1.3", "1.2"],
)
async def test_lines_over_tls_echo_the_tail_after_a_tls_1_3_half_close(
    pki: Pki, make_server: Callable[..., Any], start: Start, priority: str, tail: bytes
) -> None:
    class TailEcho(LineEchoServer):
        async def handle_eof(self, conn: LineConnection, tail: bytes) -> None:
            await conn.write(tail)

    context = server_context(pki.cert_file, pki.key_file)
    if make_server is EchoServer:
        server: Any = EchoServer(ssl_options=context, echo=LineEcho)
    else:
        server = TailEcho(ssl_options=context)
    port = await start(server)
    # gnutls-cli sends close_notify at the end of its input and reads on
    # (a TLS 1.3 half-close); OpenSSL's clients discard what follows theirs.
    proc = await asyncio.create_subprocess_exec(
        "gnutls-cli", "--x509cafile", pki.ca_file, "--priority", priority,
        "-p", str(port), HOST,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(TIMEOUT):
            out, _ = await proc.communicate(b"one\ntwo\ntail")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    received = out.split(b"Simple Client Mode:\n\n", 1)[-1]
    # Every line; the tail too under TLS 1.3; then our close_notify.
    assert (
        received == b"one\ntwo\n" + tail + b"- Peer has closed the GnuTLS connection\n"
    )


def test_server_context_requires_tls_1_2_or_later(pki: Pki) -> None:
    context = server_context(pki.cert_file, pki.key_file)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_server_context_asks_no_client_certificate_without_ca_certs(
    pki: Pki,
) -> None:
    assert server_context(pki.combined_file).verify_mode == ssl.CERT_NONE


def test_server_context_requires_client_certificate_with_ca_certs(pki: Pki) -> None:
    context = server_context(pki.cert_file, pki.key_file, ca_certs=pki.ca_file)
    assert context.verify_mode == ssl.CERT_REQUIRED


# -- the CLI -------------------------------------------------------------------


def cli(*args: str) -> list[str]:
    """``python -m tornado_echo --port 0 ARGS``."""
    return [*PYTHON, "-m", "tornado_echo", "--port", "0", *args]


def tls_exchange(port: int, context: ssl.SSLContext, payload: bytes) -> bytes:
    """Over TLS with blocking sockets: send ``payload``, read as many bytes."""
    with connect(port) as raw, context.wrap_socket(raw, server_hostname=HOST) as tls:
        return exchange(tls, payload)


def tls_exchange_refused(port: int, context: ssl.SSLContext) -> bytes:
    """As `echo_refused`, with blocking sockets."""
    try:
        return tls_exchange(port, context, b"let me in\n")
    except (ssl.SSLError, ConnectionError):
        return b""


@contextlib.contextmanager
def serving(*args: str) -> Iterator[tuple[Any, int]]:
    with running_server(cli(*args)) as started:
        yield started


@pytest.mark.parametrize("files", ["certfile and keyfile", "combined certfile"])
def test_cli_serves_tls_echo(pki: Pki, files: str) -> None:
    if files == "combined certfile":
        args = ["--certfile", pki.combined_file]
    else:
        args = ["--certfile", pki.cert_file, "--keyfile", pki.key_file]
    payload = PAYLOAD[:65536]
    with serving(*args) as (server, port):
        assert tls_exchange(port, pki.client_context(), payload) == payload
        assert server.stop(signal.SIGTERM) == 0
        stderr = server.stderr()
    assert "Traceback" not in stderr
    assert "failed TLS handshakes 0" in stderr


def test_cli_plain_text_to_tls_port_logs_one_debug_line(pki: Pki) -> None:
    args = ["--certfile", pki.cert_file, "--keyfile", pki.key_file]
    with serving(*args, "--log-level", "debug") as (server, port):
        with connect(port) as plain:
            plain.sendall(PLAIN_TEXT)
            try:
                assert plain.recv(1024) == b""
            except ConnectionResetError:
                pass  # a reset is a close too
        server.wait_for_line("TLS handshake failed")
        assert tls_exchange(port, pki.client_context(), b"fine\n") == b"fine\n"
        assert server.stop(signal.SIGTERM) == 0
        stderr = server.stderr()
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    # Tornado's log format starts each record with "[LEVEL-INITIAL ".
    assert not [line for line in lines if re.match(r"\[[WEC] ", line)], stderr
    # The shutdown summary's "failed TLS handshakes 1" is the counter, not
    # a second report of the failure.
    reports = [
        line
        for line in lines
        if "TLS handshake" in line and "failed TLS handshakes" not in line
    ]
    assert len(reports) == 1, stderr
    assert reports[0].startswith("[D "), stderr
    assert "failed TLS handshakes 1" in stderr


def test_cli_ca_certs_requires_a_client_certificate_signed_by_them(pki: Pki) -> None:
    args = ["--certfile", pki.cert_file, "--keyfile", pki.key_file]
    with serving(*args, "--ca-certs", pki.ca_file) as (server, port):
        assert tls_exchange_refused(port, pki.client_context()) == b""
        signed = pki.client_context()
        pki.client_cert.configure_cert(signed)
        assert tls_exchange(port, signed, b"signed\n") == b"signed\n"
        assert server.stop(signal.SIGTERM) == 0
        stderr = server.stderr()
    assert "Traceback" not in stderr
    assert "failed TLS handshakes 1" in stderr


def assert_one_line_error(stderr: str, *needles: str) -> None:
    """``stderr`` is one ``tornado-echo: ...`` line containing every needle."""
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("tornado-echo: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], stderr


@pytest.mark.parametrize(
    "case",
    [
        "missing certfile",
        "missing keyfile",
        "key does not match",
        "garbage certfile",
        "missing ca-certs",
        "garbage ca-certs",
    ],
)
def test_cli_unusable_tls_file_is_one_line_naming_it_and_exit_1(
    pki: Pki, tmp_path: Path, case: str
) -> None:
    missing = str(tmp_path / "missing.pem")
    cert, key = pki.cert_file, pki.key_file
    args, named = {
        "missing certfile": (["--certfile", missing, "--keyfile", key], missing),
        "missing keyfile": (["--certfile", cert, "--keyfile", missing], missing),
        "key does not match": (
            ["--certfile", cert, "--keyfile", pki.other_key_file],
            pki.other_key_file,
        ),
        "garbage certfile": (["--certfile", pki.garbage_file], pki.garbage_file),
        "missing ca-certs": (
            ["--certfile", cert, "--keyfile", key, "--ca-certs", missing],
            missing,
        ),
        "garbage ca-certs": (
            ["--certfile", cert, "--keyfile", key, "--ca-certs", pki.garbage_file],
            pki.garbage_file,
        ),
    }[case]
    result = run(cli(*args))
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr, named)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keyfile", "key.pem"], "--keyfile and --ca-certs need --certfile"),
        (["--ca-certs", "ca.pem"], "--keyfile and --ca-certs need --certfile"),
        (["--certfile", "cert.pem", "--impl", "compat"], "TLS needs --impl stream"),
    ],
    ids=["keyfile-without-certfile", "ca-certs-without-certfile", "compat-impl"],
)
def test_cli_inconsistent_tls_options_print_usage_and_exit_2(
    args: list[str], message: str
) -> None:
    result = run(cli(*args))
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
