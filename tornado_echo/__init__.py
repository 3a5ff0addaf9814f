"""tornado_echo: a correct, fast TCP echo service and line protocols on Tornado.

::

    import tornado_echo

    tornado_echo.run(port=10000)   # blocks; Ctrl-C drains and returns
"""

from tornado_echo.lifecycle import ShutdownResult
from tornado_echo.lineserver import LineConnection, LineEchoServer, LineServer
from tornado_echo.runner import ListenError, run, serve
from tornado_echo.server import EchoServer

__version__ = "0.2.0"

__all__ = [
    "EchoServer",
    "LineConnection",
    "LineEchoServer",
    "LineServer",
    "ListenError",
    "ShutdownResult",
    "__version__",
    "run",
    "serve",
]
