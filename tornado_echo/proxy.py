"""Deprecated: this module is now `tornado_echo.proxy_header`.

Its names still work from here, each with a `DeprecationWarning` when it
is used, and are the same objects as there.

.. deprecated:: 0.3.0
   Import from `tornado_echo.proxy_header` (the sans-IO PROXY header parser).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_NEW = "tornado_echo.proxy_header"


def __getattr__(name: str) -> Any:
    # On use, not on import: importing every module (doctest collection,
    # the API docs) must stay silent.
    module = importlib.import_module(_NEW)
    if name in module.__all__:
        warnings.warn(
            f"tornado_echo.proxy is now {_NEW}: import {name} from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
