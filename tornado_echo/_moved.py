"""The module ``__getattr__`` of a module path that moved (PEP 562).

It warns on use, not on import: importing every module (doctest
collection, the API docs) must stay silent.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved_to(old: str, new: str) -> Callable[[str], Any]:
    """A ``__getattr__`` for module ``old`` that serves ``new``'s public names."""

    def __getattr__(name: str) -> Any:
        module = importlib.import_module(new)
        if name in module.__all__:
            warnings.warn(
                f"{old} is now {new}: import {name} from there",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(module, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return __getattr__


def renamed_argument(owner: str, old: str, new: str, value: Any, default: Any) -> Any:
    """The value of keyword ``new``, given ``old``'s ``value`` (None: not passed).

    Passing the old name warns, and wins over the new one.
    """
    if value is None:
        return default
    warnings.warn(
        f"{owner}({old}=...) is now {owner}({new}=...)",
        DeprecationWarning,
        stacklevel=3,
    )
    return value
