"""tornado_echo: a correct, fast TCP echo service and line protocols on Tornado.

::

    import tornado_echo

    tornado_echo.run(port=10000)   # blocks; Ctrl-C drains and returns

The names below are imported on first use, so importing the package (as
its pytest plugin does in every test run) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tornado_echo.compat import RawEchoServer
    from tornado_echo.echo import ByteEcho, LineEcho
    from tornado_echo.errors import Error
    from tornado_echo.limits import Limits
    from tornado_echo.lines import LineFramer
    from tornado_echo.lineserver import IncompleteReadError, LineConnection, LineServer
    from tornado_echo.listen import ListenOn
    from tornado_echo.loops import LoopUnavailableError
    from tornado_echo.proxy_protocol import ProxyProtocol
    from tornado_echo.runner import ListenError, run, serve
    from tornado_echo.server import EchoServer
    from tornado_echo.stats import ServerStats, ShutdownResult
    from tornado_echo.tls import server_context
    from tornado_echo.udp import UdpEchoServer, UdpLimits

#: The package's version (PEP 440); setup.cfg and the docs read it from here.
__version__ = "0.3.0.dev0"

_EXPORTS = {
    "ByteEcho": "tornado_echo.echo",
    "EchoServer": "tornado_echo.server",
    "Error": "tornado_echo.errors",
    "IncompleteReadError": "tornado_echo.lineserver",
    "Limits": "tornado_echo.limits",
    "LineConnection": "tornado_echo.lineserver",
    "LineEcho": "tornado_echo.echo",
    "LineFramer": "tornado_echo.lines",
    "LineServer": "tornado_echo.lineserver",
    "ListenError": "tornado_echo.runner",
    "ListenOn": "tornado_echo.listen",
    "LoopUnavailableError": "tornado_echo.loops",
    "ProxyProtocol": "tornado_echo.proxy_protocol",
    "RawEchoServer": "tornado_echo.compat",
    "ServerStats": "tornado_echo.stats",
    "ShutdownResult": "tornado_echo.stats",
    "UdpEchoServer": "tornado_echo.udp",
    "UdpLimits": "tornado_echo.udp",
    "run": "tornado_echo.runner",
    "serve": "tornado_echo.runner",
    "server_context": "tornado_echo.tls",
}

__all__ = [
    "ByteEcho",
    "EchoServer",
    "Error",
    "IncompleteReadError",
    "Limits",
    "LineConnection",
    "LineEcho",
    "LineFramer",
    "LineServer",
    "ListenError",
    "ListenOn",
    "LoopUnavailableError",
    "ProxyProtocol",
    "RawEchoServer",
    "ServerStats",
    "ShutdownResult",
    "UdpEchoServer",
    "UdpLimits",
    "__version__",
    "run",
    "serve",
    "server_context",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tornado_echo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
