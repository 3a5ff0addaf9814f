"""The ``tornado-echo`` command (also ``python -m tornado_echo``)."""

from __future__ import annotations

import argparse
import codecs
import functools
import logging
import sys
from collections.abc import Sequence

from tornado.log import enable_pretty_logging

from tornado_echo import __version__
from tornado_echo.echo import LONG_LINE_POLICIES, ByteEcho, LineEcho, ProtocolFactory
from tornado_echo.lines import DEFAULT_MAX_LINE_LENGTH
from tornado_echo.loops import LOOPS, LoopUnavailableError
from tornado_echo.runner import IMPLS, ListenError, make_server, run

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
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
    parser = argparse.ArgumentParser(
        prog="tornado-echo",
        description="A TCP echo server (RFC 862) on Tornado.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=10000,
        help="TCP port; 0 picks a free one (default: %(default)s)",
    )
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
        "before they are closed (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        default="info",
        help="(default: %(default)s)",
    )
    lines = parser.add_argument_group(
        "line mode", "echo complete lines; the unterminated tail is echoed at EOF"
    )
    lines.add_argument("--lines", action="store_true", help="echo line by line")
    lines.add_argument(
        "--delimiter",
        type=_delimiter,
        default=b"\n",
        metavar="STR",
        help=r"line delimiter; escapes like \r\n are understood (default: \n)",
    )
    lines.add_argument(
        "--max-line-length",
        type=_positive_int,
        default=DEFAULT_MAX_LINE_LENGTH,
        metavar="N",
        help="longest line in bytes, without the delimiter (default: %(default)s)",
    )
    lines.add_argument(
        "--on-long-line",
        choices=LONG_LINE_POLICIES,
        default="close",
        help="what an overlong line does: close the connection, skip the line, "
        "or reply with an error and skip it (default: %(default)s)",
    )
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    protocol: ProtocolFactory = ByteEcho
    if args.lines:
        protocol = functools.partial(
            LineEcho,
            delimiter=args.delimiter,
            max_line_length=args.max_line_length,
            on_long_line=args.on_long_line,
        )
    root = logging.getLogger()
    enable_pretty_logging(logger=root)
    root.setLevel(args.log_level.upper())
    try:
        run(
            args.port,
            args.host,
            server=functools.partial(make_server, args.impl, protocol),
            shutdown_timeout=args.shutdown_timeout,
            loop=args.loop,
        )
    except ListenError as exc:
        print(f"tornado-echo: {exc.strerror}", file=sys.stderr)
        return 1
    except LoopUnavailableError as exc:
        print(f"tornado-echo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
