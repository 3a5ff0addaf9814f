"""The ``tornado-echo`` command (also ``python -m tornado_echo``)."""

from __future__ import annotations

import argparse
import codecs
import functools
import signal
import ssl
import sys
from collections.abc import Callable, Sequence

from tornado_echo import __version__
from tornado_echo._logs import log_to_stderr
from tornado_echo.echo import ByteEcho, EchoFactory, LineEcho
from tornado_echo.errors import Error
from tornado_echo.limits import FD_RESERVE, Limits
from tornado_echo.lines import DEFAULT_MAX_LINE_LENGTH, LONG_LINE_POLICIES
from tornado_echo.listen import DEFAULT_UNIX_MODE
from tornado_echo.loops import LOOPS
from tornado_echo.processes import MAX_PER_CPU, resolve_count
from tornado_echo.proxy_protocol import DEFAULT_HEADER_TIMEOUT, ProxyProtocol
from tornado_echo.runner import IMPLS, make_server, run
from tornado_echo.tls import server_context

_DEFAULT_PORT = 10000
_DEFAULT_HOST = "127.0.0.1"
_DEFAULTS = Limits()

_LOG_LEVELS = ("debug", "info", "warning", "error")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, not {port}")
    return port


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def _file_mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an octal file mode (like 600 or 0660): {text!r}"
        ) from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"file mode must be 0-777, not {text}")
    return value


def _whole_number(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            least = "0 or more" if minimum == 0 else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be {least}, not {value}")
        return value

    return parse


_count = _whole_number(0)
_positive_int = _whole_number(1)


def _processes(text: str) -> int:
    value = _count(text)
    try:
        resolve_count(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _delimiter(text: str) -> bytes:
    try:
        value = codecs.decode(text, "unicode_escape").encode("latin-1")
    except (UnicodeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"not a delimiter (use bytes or escapes like \\r\\n): {text!r}"
        ) from None
    if not value:
        raise argparse.ArgumentTypeError("the delimiter must not be empty")
    return value


def build_parser() -> argparse.ArgumentParser:
    r"""The ``tornado-echo`` argument parser (the CLI reference is built from it).

    >>> args = build_parser().parse_args(["--lines", "--delimiter", r"\r\n"])
    >>> args.lines, args.delimiter
    (True, b'\r\n')
    """
    parser = argparse.ArgumentParser(
        prog="tornado-echo",
        description="A TCP echo server (RFC 862) on Tornado.",
    )
    _add_listen_options(parser)
    _add_tls_options(parser)
    _add_proxy_options(parser)
    _add_logging_options(parser)
    _add_limits_options(parser)
    _add_running_options(parser)
    _add_lines_options(parser)
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def _add_listen_options(parser: argparse.ArgumentParser) -> None:
    """Options for where to listen."""
    listen = parser.add_argument_group(
        "where to listen",
        "under systemd socket activation the inherited sockets are used instead",
    )
    listen.add_argument(
        "--host",
        action="append",
        metavar="HOST",
        help="address to bind; repeat for several; * or :: (or an empty "
        f"HOST) means every interface, IPv4 and IPv6 (default: {_DEFAULT_HOST})",
    )
    listen.add_argument(
        "--port",
        type=_port,
        help=f"TCP port; 0 picks a free one (default: {_DEFAULT_PORT})",
    )
    listen.add_argument(
        "--unix",
        metavar="PATH",
        help="also listen on this unix socket (only there, without --host "
        "or --port); removed on exit",
    )
    listen.add_argument(
        "--unix-mode",
        type=_file_mode,
        default=DEFAULT_UNIX_MODE,
        metavar="MODE",
        help=f"file mode of the unix socket, in octal (default: {DEFAULT_UNIX_MODE:o})",
    )
    listen.add_argument(
        "--udp",
        action="store_true",
        help="also serve UDP echo (RFC 862) on the TCP port, rate limited per "
        "source host; off by default, as UDP echo can be abused for reflection",
    )
    listen.add_argument(
        "--processes",
        type=_processes,
        default=1,
        metavar="N",
        help="worker processes sharing the sockets; 0 = one per CPU, and at "
        f"most {MAX_PER_CPU} per CPU (default: %(default)s)",
    )


def _add_tls_options(parser: argparse.ArgumentParser) -> None:
    """Options for TLS."""
    tls = parser.add_argument_group("TLS", "serve TLS instead of plain TCP")
    tls.add_argument("--certfile", metavar="PATH", help="certificate chain (PEM)")
    tls.add_argument(
        "--keyfile", metavar="PATH", help="private key (PEM), if not in --certfile"
    )
    tls.add_argument(
        "--ca-certs",
        metavar="PATH",
        help="CA certificates (PEM); clients must present a certificate they signed",
    )


def _add_proxy_options(parser: argparse.ArgumentParser) -> None:
    """Options for the PROXY protocol."""
    proxy = parser.add_argument_group(
        "behind a load balancer",
        "PROXY protocol v1 and v2, as HAProxy's send-proxy and send-proxy-v2 send it",
    )
    proxy.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="every connection starts with a PROXY header giving the client's "
        "address; without --proxy-from, any source is trusted to send it",
    )
    proxy.add_argument(
        "--proxy-from",
        action="append",
        metavar="CIDR",
        help="accept connections (and their PROXY headers) only from this "
        "network, e.g. 10.0.0.0/8; repeat for several",
    )
    proxy.add_argument(
        "--proxy-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="close a connection whose header has not arrived by then "
        f"(default: {DEFAULT_HEADER_TIMEOUT:g})",
    )


def _add_logging_options(parser: argparse.ArgumentParser) -> None:
    """Options for connection logging."""
    parser.add_argument(
        "--log-connections",
        action="store_true",
        help="log each connection at INFO when it opens and closes, with the "
        "peer, bytes in and out, and duration",
    )


def _add_limits_options(parser: argparse.ArgumentParser) -> None:
    """Options for the limits."""
    limits = parser.add_argument_group("limits", "0 switches a timeout off")
    limits.add_argument(
        "--max-connections",
        type=_positive_int,
        metavar="N",
        help="at N open connections, stop accepting until one closes; new "
        f"clients wait in the backlog (default: the open-file limit - {FD_RESERVE})",
    )
    limits.add_argument(
        "--max-connections-per-host",
        type=_positive_int,
        metavar="N",
        help="at most N open connections from one client host (its real "
        "address, behind --proxy-protocol; an IPv6 host counts by its /64); "
        "its further connections are closed at once (default: no limit)",
    )
    limits.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=_DEFAULTS.idle_timeout,
        metavar="SECONDS",
        help="close a connection with no traffic either way for this long "
        "(default: %(default)g)",
    )
    limits.add_argument(
        "--write-timeout",
        type=_seconds,
        default=_DEFAULTS.write_timeout,
        metavar="SECONDS",
        help="close a connection whose client reads none of our pending data "
        "for this long (default: %(default)g)",
    )
    limits.add_argument(
        "--handshake-timeout",
        type=_seconds,
        default=_DEFAULTS.handshake_timeout,
        metavar="SECONDS",
        help="close a TLS connection whose handshake takes longer "
        "(default: %(default)g)",
    )


def _add_running_options(parser: argparse.ArgumentParser) -> None:
    """Options for the implementation, loop, shutdown and logging."""
    parser.add_argument(
        "--impl",
        choices=IMPLS,
        default="stream",
        help="stream: EchoServer on IOStream; compat: raw fd handlers "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="asyncio",
        help="event loop: asyncio's own, or uvloop if installed (default: %(default)s)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long open connections may finish "
        "before they are closed (default: %(default)g)",
    )
    parser.add_argument(
        "--stats-interval",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="log the server's counters this often; 0 = only at shutdown "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        default="info",
        help="the least severe messages to log: info says where it listens, "
        "how it shut down and what it served (and each connection, with "
        "--log-connections); debug adds connection resets and failed TLS "
        "handshakes; warning keeps only problems (default: %(default)s)",
    )


def _add_lines_options(parser: argparse.ArgumentParser) -> None:
    """Options for line mode."""
    lines = parser.add_argument_group(
        "line mode", "echo complete lines; the unterminated tail is echoed at EOF"
    )
    lines.add_argument("--lines", action="store_true", help="echo line by line")
    lines.add_argument(
        "--delimiter",
        type=_delimiter,
        metavar="STR",
        help=r"line delimiter; escapes like \r\n are understood (default: \n)",
    )
    lines.add_argument(
        "--max-line-length",
        type=_positive_int,
        metavar="N",
        help="longest line in bytes, without the delimiter "
        f"(default: {DEFAULT_MAX_LINE_LENGTH})",
    )
    lines.add_argument(
        "--on-long-line",
        choices=LONG_LINE_POLICIES,
        help="what an overlong line does: close the connection, skip the line, "
        "or reply with an error and skip it (default: close)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.keyfile or args.ca_certs) and not args.certfile:
        parser.error("--keyfile and --ca-certs need --certfile")
    if args.certfile and args.impl != "stream":
        parser.error("TLS needs --impl stream")
    proxy_protocol = _proxy_protocol(parser, args)
    echo = _echo(parser, args)
    # --unix alone listens only there; with --host or --port, on both.
    tcp_wanted = args.unix is None or args.host is not None or args.port is not None
    port = (_DEFAULT_PORT if args.port is None else args.port) if tcp_wanted else None
    hosts = args.host if args.host is not None else [_DEFAULT_HOST]
    if args.udp and port is None:
        parser.error("--udp needs a TCP port (--port or --host)")
    log_to_stderr(args.log_level.upper())
    try:
        server = functools.partial(
            make_server,
            args.impl,
            echo,
            limits=_limits(args),
            ssl_options=_ssl_options(args),
            proxy_protocol=proxy_protocol,
            log_connections=args.log_connections,
        )
        run(
            port,
            hosts,
            server=server,
            shutdown_timeout=args.shutdown_timeout,
            unix=args.unix,
            unix_mode=args.unix_mode,
            udp=args.udp,
            stats_interval=args.stats_interval,
            loop=args.loop,
            processes=args.processes,
        )
    except Error as exc:
        print(f"tornado-echo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C before the server took over SIGINT (while binding, say):
        # nothing was serving yet, so there is nothing to drain or report.
        return 128 + signal.SIGINT
    return 0


def _echo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> EchoFactory:
    given = {
        name: value
        for name, value in (
            ("delimiter", args.delimiter),
            ("max_line_length", args.max_line_length),
            ("on_long_line", args.on_long_line),
        )
        if value is not None
    }
    if not args.lines:
        if given:
            # Silently echoing bytes would hide the mistake until a client
            # noticed that its lines are not lines.
            parser.error(
                "--delimiter, --max-line-length and --on-long-line need --lines"
            )
        return ByteEcho
    return functools.partial(LineEcho, **given)


def _proxy_protocol(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> ProxyProtocol | None:
    proxy_options = args.proxy_from is not None or args.proxy_timeout is not None
    if proxy_options and not args.proxy_protocol:
        parser.error("--proxy-from and --proxy-timeout need --proxy-protocol")
    if not args.proxy_protocol:
        return None
    timeout = args.proxy_timeout
    try:
        return ProxyProtocol(
            trusted=tuple(args.proxy_from or ()),
            header_timeout=DEFAULT_HEADER_TIMEOUT if timeout is None else timeout,
        )
    except ValueError as exc:
        parser.error(str(exc))


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(
        max_connections=args.max_connections,
        max_connections_per_host=args.max_connections_per_host,
        idle_timeout=args.idle_timeout,
        write_timeout=args.write_timeout,
        handshake_timeout=args.handshake_timeout,
    )


def _ssl_options(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.certfile:
        return None
    return server_context(args.certfile, args.keyfile, args.ca_certs)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
