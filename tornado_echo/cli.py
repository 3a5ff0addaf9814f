"""The ``tornado-echo`` command (also ``python -m tornado_echo``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from tornado.log import enable_pretty_logging

from tornado_echo import __version__
from tornado_echo.runner import IMPLS, ListenError, run

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
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    root = logging.getLogger()
    enable_pretty_logging(logger=root)
    root.setLevel(args.log_level.upper())
    try:
        run(
            args.port,
            args.host,
            impl=args.impl,
            shutdown_timeout=args.shutdown_timeout,
        )
    except ListenError as exc:
        print(f"tornado-echo: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
