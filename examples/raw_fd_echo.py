"""The classic raw fd-handler echo server: `RawEchoServer` from `tornado_echo.compat`.

Run it::

    python examples/raw_fd_echo.py              # listens on 127.0.0.1:10000
    python examples/raw_fd_echo.py --port 0     # any free port; the log shows it

and try it with ``nc 127.0.0.1 10000``. Ctrl-C or SIGTERM (POSIX only) stops
accepting, gives open connections up to ``--shutdown-timeout`` seconds to
finish, closes the rest and exits 0.

The sockets are bound first, with `tornado_echo.ListenOn`; everything else
happens inside ``asyncio.run(main(sockets, ...))``: the server registers its
fd handlers on the running loop, so it must not be created before that loop
exists. A port that is in use, or not a port, is one line on stderr and exit
status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys

from tornado_echo import Error, ListenOn
from tornado_echo.compat import RawEchoServer

log = logging.getLogger("raw_fd_echo")


async def main(sockets: list[socket.socket], shutdown_timeout: float) -> None:
    server = RawEchoServer()
    server.add_sockets(sockets)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    # Logged only now, so whoever waits for this line may signal us at once.
    log.info("listening on 127.0.0.1:%d", sockets[0].getsockname()[1])

    try:
        await stopping.wait()
        log.info("shutting down (up to %gs to drain)", shutdown_timeout)
    finally:
        result = await server.shutdown(shutdown_timeout)
        log.info("stopped: %d drained, %d closed", result.drained, result.closed)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The raw fd-handler echo server.")
    parser.add_argument("--port", type=int, default=10000, help="0 picks a free port")
    parser.add_argument(
        "--shutdown-timeout", type=float, default=5.0, metavar="SECONDS"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        # Bound here and passed in (add_sockets, not listen()), so that
        # main() can log the real port.
        with ListenOn(port=args.port, host="127.0.0.1").bind() as sockets:
            asyncio.run(main(sockets, args.shutdown_timeout))
    except (Error, ValueError) as exc:  # a port in use, or not 0-65535
        sys.exit(f"{parser.prog}: {exc}")
