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
    from tornado_echo.errors import Error
    from tornado_echo.lifecycle import ShutdownResult
    from tornado_echo.limits import Limits
    from tornado_echo.lineserver import IncompleteReadError, LineConnection, LineServer
    from tornado_echo.loops import LoopUnavailableError
    from tornado_echo.runner import ListenError, run, serve
    from tornado_echo.server import EchoServer
    from tornado_echo.stats import ServerStats

#: The package's version (PEP 440); setup.cfg and the docs read it from here.
__version__ = "0.3.0.dev0"

_EXPORTS = {
    "EchoServer": "tornado_echo.server",
    "Error": "tornado_echo.errors",
    "IncompleteReadError": "tornado_echo.lineserver",
    "LineConnection": "tornado_echo.lineserver",
    "LineServer": "tornado_echo.lineserver",
    "Limits": "tornado_echo.limits",
    "ListenError": "tornado_echo.runner",
    "LoopUnavailableError": "tornado_echo.loops",
    "ServerStats": "tornado_echo.stats",
    "ShutdownResult": "tornado_echo.lifecycle",
    "run": "tornado_echo.runner",
    "serve": "tornado_echo.runner",
}

__all__ = [
    "EchoServer",
    "Error",
    "IncompleteReadError",
    "Limits",
    "LineConnection",
    "LineServer",
    "ListenError",
    "LoopUnavailableError",
    "ServerStats",
    "ShutdownResult",
    "__version__",
    "run",
    "serve",
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
