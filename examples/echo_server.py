"""An echo server in a few lines, on `tornado_echo.run`.

Run it::

    python examples/echo_server.py              # listens on 127.0.0.1:10000
    python examples/echo_server.py --port 0     # any free port; the log shows it

and try it with ``nc 127.0.0.1 10000``: every line you type comes back.
Ctrl-C (or SIGTERM) stops accepting, gives open connections up to five
seconds to finish, and exits.
"""

from __future__ import annotations

import argparse
import logging
import sys

import tornado_echo


def main() -> None:
    parser = argparse.ArgumentParser(description="A TCP echo server on Tornado.")
    parser.add_argument(
        "--port", type=int, default=10000, help="0 picks a free port (default: 10000)"
    )
    args = parser.parse_args()
    # run() logs "listening on 127.0.0.1:PORT" at INFO; show it on stderr.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        tornado_echo.run(port=args.port, host="127.0.0.1", shutdown_timeout=5.0)
    except (tornado_echo.Error, ValueError) as exc:  # a port in use, or not 0-65535
        sys.exit(f"{parser.prog}: {exc}")


if __name__ == "__main__":
    main()
