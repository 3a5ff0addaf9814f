"""Send one message to an echo server and print what comes back.

Start a server (``python examples/echo_server.py``), then::

    python examples/echo_client.py                # "hello, echo" to 127.0.0.1:10000
    python examples/echo_client.py --port 10001 "hi there"

It is the scripted version of ``nc 127.0.0.1 10000``; ``--host`` and
``--port`` default to the servers' own. It prints the echo and exits 0, or
prints one line saying what went wrong and exits 1 if the port is not one, it
cannot connect, or the echo does not come back within ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient


async def main() -> int:
    parser = argparse.ArgumentParser(description="Send one message to an echo server.")
    parser.add_argument("message", nargs="?", default="hello, echo")
    parser.add_argument("--host", default="127.0.0.1", help="(default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=10000, help="(default: %(default)s)"
    )
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")
    args = parser.parse_args()
    name, where = parser.prog, f"{args.host}:{args.port}"
    message = args.message.encode()
    if not 0 < args.port <= 65535:
        # getaddrinfo would quietly connect to port 70000 - 65536 instead.
        print(f"{name}: port must be 1 to 65535, not {args.port}", file=sys.stderr)
        return 1

    client = TCPClient()
    try:
        async with asyncio.timeout(args.timeout):
            stream = await client.connect(args.host, args.port)
    except (OSError, StreamClosedError, TimeoutError) as exc:
        print(f"{name}: cannot connect to {where}: {_reason(exc)}", file=sys.stderr)
        return 1
    finally:
        client.close()

    try:
        async with asyncio.timeout(args.timeout):
            await stream.write(message)
            reply = await stream.read_bytes(len(message))
    except (StreamClosedError, TimeoutError) as exc:
        print(f"{name}: no echo from {where}: {_reason(exc)}", file=sys.stderr)
        return 1
    finally:
        # Also after a timeout: a stream whose read was abandoned is stuck.
        stream.close()
    print(reply.decode(errors="replace"))
    return 0


def _reason(exc: BaseException) -> str:
    """A few words for why a connection failed ("Connection refused", ...)."""
    if isinstance(exc, StreamClosedError) and exc.real_error is not None:
        exc = exc.real_error
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, StreamClosedError):
        return "connection closed"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
