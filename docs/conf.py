"""Sphinx configuration for the tornado_echo API reference.

Build it, offline, with zero warnings allowed::

    pip install -e '.[docs]'
    sphinx-build -W -b html docs docs/_build/html
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

_DOCS = Path(__file__).resolve().parent
# The checkout's package, not whichever copy happens to be installed, and
# our own extensions.
sys.path[:0] = [str(_DOCS.parent), str(_DOCS / "_ext")]

import tornado_echo

# -- Project -------------------------------------------------------------------

project = "tornado_echo"
author = "The tornado_echo developers"
copyright = "The tornado_echo developers"
# One source of truth: the package's own __version__ (setup.cfg reads it too).
release = tornado_echo.__version__
version = ".".join(release.split(".")[:2])

# -- General -------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "argparse_options",
    "package_exports",
]

# Option names, quotes and escapes stay as typed: "--host" must not become
# an en dash, nor '' curly quotes, in text a reader may copy.
smartquotes = False

# `performance/` holds the benchmark's own Markdown output, not pages.
exclude_patterns = ["_build", "performance"]

# Single backticks are cross-references to Python objects, as in Tornado's
# docs, so our docstrings' `LineServer`, `.IOStream` and `~LineFramer.frame`
# are links.
default_role = "py:obj"

# Every reference must resolve: an unresolved one is a warning, and -W makes
# it an error, so a renamed or removed name cannot leave a dead reference.
nitpicky = True

# There is no intersphinx: the build must work offline, and the Python and
# Tornado inventories cannot be fetched then. References to things outside
# this package (the standard library, Tornado, pytest) are therefore shown
# as plain code text without a link, and only those are exempt from
# nitpicky: every tornado_echo name must still resolve. The patterns match
# the fully qualified names autodoc writes in signatures and the short forms
# our docstrings use (`.IOStream`, `.TCPServer`, `ssl.SSLContext`).
_EXTERNAL_MODULES = sorted(
    sys.stdlib_module_names | {"tornado", "pytest", "pytest_asyncio"}
)
# Short names our docstrings use for external classes (`.IOStream`, or
# `.Future` for asyncio's).
_EXTERNAL_NAMES = (
    "AsyncTestCase",
    "BaseIOStream",
    "IOLoop",
    "IOStream",
    "SSLIOStream",
    "StreamClosedError",
    "TCPServer",
    "Future",
    "bind_sockets",
)
nitpick_ignore_regex = [
    # Internal modules (their docs are their docstrings) named in signatures.
    ("py:class", r"tornado_echo\._\w+\.\w+"),
    (r"py:.*", rf"\.?({'|'.join(_EXTERNAL_MODULES)})(\..+)?"),
    (r"py:.*", rf"\.?({'|'.join(_EXTERNAL_NAMES)})(\..+)?"),
]
# Private type variables in signatures: there is nothing to link them to.
nitpick_ignore = [
    ("py:class", "tornado_echo.loops._T"),
    ("py:class", "tornado_echo.runner._L"),
    # The "left out" sentinel of a keyword whose None is a value of its own.
    ("py:class", "tornado_echo.lineserver._Unset"),
]

# -- autodoc -------------------------------------------------------------------

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    # Each object is documented once, in the module that defines it, even
    # where another module re-exports it through __all__ (runner re-exports
    # listen's ListenError and bind).
    "ignore-module-all": True,
}
# Overrides of Tornado's hooks (read_from_fd, write_to_fd, ...) that have no
# docstring of their own are implementation details, not API to document
# with Tornado's words.
autodoc_inherit_docstrings = False
autodoc_member_order = "bysource"
# Each page is one module, named in its title: "EchoServer", not
# "tornado_echo.server.EchoServer", in every signature.
add_module_names = False
autodoc_preserve_defaults = True
# The pytest plugin's module imports pytest; the docs extra installs neither
# pytest nor pytest-asyncio, so they are stood in for while it is read.
autodoc_mock_imports = ["pytest", "pytest_asyncio"]


# With ``from __future__ import annotations`` every annotation is a string,
# which autodoc evaluates in the module's namespace. Names a module imports
# only under ``if TYPE_CHECKING:`` (to avoid import cycles) are missing
# there, the evaluation fails, and the signature would show bare strings
# that link nowhere or to the wrong object. So, for the docs build only,
# each module's TYPE_CHECKING imports are done for real before autodoc
# reads its signatures, as a type checker sees them. Only names the module
# does not already have are added; nothing else changes.
_TYPE_CHECKING_DONE: set[str] = set()


def _import_type_checking_names(module: ModuleType) -> None:
    if module.__name__ in _TYPE_CHECKING_DONE:
        return
    _TYPE_CHECKING_DONE.add(module.__name__)
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return
    namespace = vars(module)
    for node in ast.parse(source).body:
        if not isinstance(node, ast.If) or ast.unparse(node.test) not in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            continue
        for statement in node.body:
            if isinstance(statement, ast.ImportFrom) and statement.module:
                try:
                    imported = importlib.import_module(statement.module)
                except ImportError:
                    # Stubs-only modules (_typeshed) exist for type checkers.
                    continue
                for alias in statement.names:
                    value = getattr(imported, alias.name)
                    namespace.setdefault(alias.asname or alias.name, value)


def _before_signature(app: Any, obj: Any, bound_method: bool) -> None:
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if module is not None and module.__name__.startswith("tornado_echo"):
        _import_type_checking_names(module)


def _fixture_signature(
    app: Any,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str | None] | None:
    # A fixture's parameters are other fixtures, which pytest injects; nobody
    # passes them. Show only what the fixture gives.
    if what == "function" and name.startswith("tornado_echo.pytest_plugin."):
        return "()", return_annotation
    return None


def setup(app: Any) -> None:
    app.connect("autodoc-before-process-signature", _before_signature)
    app.connect("autodoc-process-signature", _fixture_signature)


# -- HTML ----------------------------------------------------------------------

html_theme = "furo"
html_title = f"tornado_echo {release}"
html_static_path = ["_static"]
html_css_files = ["options.css"]
