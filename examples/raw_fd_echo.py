"""The classic raw fd-handler echo server: `RawEchoServer` from `tornado_echo.compat`.

Run it::

    python examples/raw_fd_echo.py              # listens on 127.0.0.1:10000
    python examples/raw_fd_echo.py --port 0     # any free port; the log shows it

and try it with ``nc 127.0.0.1 10000``. Ctrl-C or SIGTERM (POSIX only) stops
accepting, gives open connections up to ``--shutdown-timeout`` seconds to
finish, closes the rest and exits 0.

Everything happens inside ``asyncio.run(main())``: the server registers its
fd handlers on the running loop, so it must not be created before that loop
exists.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from tornado.netutil import bind_sockets

from tornado_echo.compat import RawEchoServer

log = logging.getLogger("raw_fd_echo")


async def main(port: int, shutdown_timeout: float) -> int:
    # bind_sockets + add_sockets rather than listen(), to learn the real port.
    try:
        sockets = bind_sockets(port, "127.0.0.1")
    except OSError as exc:
        print(
            f"raw_fd_echo: cannot listen on 127.0.0.1:{port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
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
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The raw fd-handler echo server.")
    parser.add_argument("--port", type=int, default=10000, help="0 picks a free port")
    parser.add_argument(
        "--shutdown-timeout", type=float, default=5.0, metavar="SECONDS"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sys.exit(asyncio.run(main(args.port, args.shutdown_timeout)))
