"""Choosing the event loop: the default asyncio loop, or uvloop.

Tornado runs on any asyncio loop that implements ``add_reader``, so the
servers work unchanged on `uvloop <https://github.com/MagicStack/uvloop>`_,
whose loop, callbacks and timers are written in C. `run_with` starts a
coroutine on the named loop; `.run` and ``tornado-echo --loop`` use it.

>>> LOOPS
('asyncio', 'uvloop')

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, cast

from tornado_echo.errors import Error

__all__ = ["LOOPS", "LoopName", "LoopUnavailableError", "loop_factory", "run_with"]

LoopName = Literal["asyncio", "uvloop"]
LOOPS: tuple[LoopName, ...] = ("asyncio", "uvloop")

_T = TypeVar("_T")


class LoopUnavailableError(Error, RuntimeError):
    """The event loop asked for is not installed.

    .. versionadded:: 0.3.0
    """


def loop_factory(name: LoopName) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What creates a new loop of kind ``name``; `None` for asyncio's default.

    Raises `LoopUnavailableError` if ``name`` is ``"uvloop"`` and uvloop
    cannot be imported, and `ValueError` for an unknown name.

    >>> loop_factory("asyncio") is None
    True
    """
    if name == "asyncio":
        return None
    if name == "uvloop":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            raise LoopUnavailableError(
                "uvloop is not installed; install it with "
                "pip install 'tornado_echo[uvloop]', or use the asyncio loop"
            ) from None
        return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)
    raise ValueError(f"loop must be one of {', '.join(LOOPS)}, not {name!r}")


def run_with(name: LoopName, main: Coroutine[Any, Any, _T]) -> _T:
    """`asyncio.run` on the loop called ``name``.

    ::

        import asyncio
        from tornado_echo.loops import run_with

        async def main() -> None:
            await asyncio.sleep(0)

        run_with("asyncio", main())
    """
    try:
        factory = loop_factory(name)
    except BaseException:
        main.close()  # so Python does not warn that it was never awaited
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
