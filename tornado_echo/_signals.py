"""The stop signals while a server runs: the first drains, a second SIGINT closes.

Used by `.serve`. SIGHUP stops too: a closed terminal or a script's ``kill
-HUP`` must not kill the server without a drain (there is no configuration
to reload).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

__all__ = ["StopSignals", "stop_signals"]

log = logging.getLogger("tornado_echo")


class _Closes(Protocol):
    def close_all(self) -> int: ...


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that make a server drain and exit.

    SIGINT, SIGTERM and SIGHUP: a closed terminal or a script's ``kill
    -HUP`` must not kill the server without a drain (there is no
    configuration to reload). SIGHUP is left alone when it is ignored, as
    under ``nohup``.
    """
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        return (signal.SIGINT, signal.SIGTERM)
    return (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopSignals:
    """The stop signals while a server runs: the first drains, a second SIGINT closes."""

    def __init__(self, srv: _Closes, install: bool) -> None:
        self._srv = srv
        self.stopping = asyncio.Event()
        #: The first stop signal received, if one was.
        self.received: signal.Signals | None = None
        self._loop = asyncio.get_running_loop()
        self._installed: list[signal.Signals] = []
        if not install:
            return
        for sig in stop_signals():
            try:
                self._loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                # Not the main thread, or a platform without it: the caller
                # stops us by cancelling instead.
                continue
            self._installed.append(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self.stopping.is_set():
            self.received = sig
            self.stopping.set()
        elif sig == signal.SIGINT:
            count = self._srv.close_all()
            log.info("second interrupt: closed %d connection(s) at once", count)

    def how(self) -> str:
        """`` on SIGTERM``, say, for the ``shutting down`` line."""
        if self.received is None:
            return ""
        if self.received == signal.SIGHUP:
            return " on SIGHUP, as on SIGTERM"
        return f" on {self.received.name}"

    def hint(self) -> str:
        """What else the user can do while the server drains, if anything."""
        if signal.SIGINT not in self._installed:
            return ""
        if self.received == signal.SIGINT:
            return "; a second SIGINT (Ctrl-C) closes every connection now"
        return "; SIGINT closes every connection now"

    def remove(self) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)
