"""`Error`, the base of every exception tornado_echo raises for its user.

Each keeps the built-in base it had (`.ListenError` is still an `OSError`,
`.TLSConfigError` a `ValueError`), so existing ``except`` clauses go on
working; an application, or the CLI, can catch them all as one::

    import tornado_echo

    try:
        tornado_echo.run(port=80)
    except tornado_echo.Error as exc:
        raise SystemExit(f"cannot serve: {exc}")

No Tornado import: the sans-IO modules raise it too.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

__all__ = ["Error"]


class Error(Exception):
    """The base of tornado_echo's own exceptions; each says what to do in one sentence."""
