"""The smallest `tornado_echo.LineServer`: every line comes back in upper case.

Run it::

    python examples/uppercase_server.py              # listens on 127.0.0.1:10000
    python examples/uppercase_server.py --port 0     # any free port; the log shows it

and try it with ``nc 127.0.0.1 10000``: type ``hello`` and ``HELLO`` comes
back. Ctrl-C (or SIGTERM) stops accepting, drains open connections and exits.
"""

import argparse
import sys

from tornado.log import enable_pretty_logging

from tornado_echo import Error, LineConnection, LineServer, run


class UppercaseServer(LineServer):
    async def handle_line(self, conn: LineConnection, line: bytes) -> bytes:
        return line.upper()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Uppercase every line.")
    parser.add_argument("--port", type=int, default=10000, help="0 picks a free port")
    enable_pretty_logging()
    try:
        run(parser.parse_args().port, server=UppercaseServer)
    except (Error, ValueError) as exc:  # a port in use, or not 0-65535
        sys.exit(f"{parser.prog}: {exc}")
