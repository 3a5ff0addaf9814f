"""Run pytest on a project of its own, as a user of the plugin would.

Shared by ``test_testing_helpers.py`` and ``test_pytest_docs.py``. The
child runs in the project directory, which is also its rootdir, with none
of this suite's environment (``PYTEST_*``, ``PYTHONPATH``), so only the
project's own files configure it and this suite's conftest is never seen.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: Seconds a child pytest may take; a few small tests need far less.
TIMEOUT = 60.0

#: The message the plugin's fixtures fail with when pytest-asyncio is missing.
NEEDS_PYTEST_ASYNCIO = (
    "tornado_echo's tcp_address, tcp_client, start_tcp_server and "
    "open_tcp_client fixtures need pytest-asyncio, which is not installed: "
    "pip install pytest-asyncio"
)


def run_pytest(
    project: Path, *args: str, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pytest ARGS`` in ``project``, warnings as errors."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            "--rootdir",
            str(project),
            *args,
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def without_pytest_asyncio(directory: Path) -> tuple[Path, list[str]]:
    """A PYTHONPATH and pytest arguments under which pytest-asyncio is absent.

    Its plugin is not loaded (``-p no:asyncio``) and ``import pytest_asyncio``
    raises `ImportError`, as in a project that never installed it.
    """
    directory.mkdir()
    (directory / "pytest_asyncio.py").write_text(
        'raise ImportError("pytest-asyncio is not installed here")\n'
    )
    return directory, ["-p", "no:asyncio"]
