"""The benchmark's progress, on stderr.

`Progress` shows rich's progress bar when stderr is a terminal and rich is
installed (the bench extra installs it), and otherwise prints a line per
finished step. Notes go above the bar, or on lines of their own.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Self


class Progress:
    """Progress on stderr: a rich bar on a terminal, else a line per step."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._done = 0
        self._what = ""
        self._bar: _RichBar | None = None
        if sys.stderr.isatty():
            try:
                self._bar = _RichBar(total)
            except ImportError:
                pass

    def __enter__(self) -> Self:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def begin(self, what: str) -> None:
        self._what = what
        if self._bar is not None:
            self._bar.describe(what)

    def done(self, summary: str) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.advance()
        else:
            self.note(f"[{self._done}/{self._total}] {self._what}: {summary}")

    def note(self, message: str) -> None:
        if self._bar is not None:
            self._bar.print(f"bench: {message}")
        else:
            print(f"bench: {message}", file=sys.stderr, flush=True)


class _RichBar:
    """rich's progress bar; making one raises `ImportError` without rich."""

    def __init__(self, total: int) -> None:
        # Optional (the bench extra installs it); the ignores keep mypy quiet
        # where it is not installed.
        from rich.console import Console  # type: ignore[import-not-found, unused-ignore]
        from rich.progress import (  # type: ignore[import-not-found, unused-ignore]
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self._console,
            # Few redraws: the bar shares the client's CPU.
            refresh_per_second=2,
        )
        self._task = self._progress.add_task("starting", total=total)

    def start(self) -> None:
        self._progress.start()

    def stop(self) -> None:
        self._progress.stop()

    def describe(self, what: str) -> None:
        self._progress.update(self._task, description=what)

    def advance(self) -> None:
        self._progress.advance(self._task)

    def print(self, message: str) -> None:
        self._console.print(message, markup=False, highlight=False)
