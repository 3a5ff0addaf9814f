"""``.. package-exports:: tornado_echo``: the names a package re-exports.

Renders one row per name in the package's ``__all__`` (dunder names
aside): the name, linked to where it is defined and documented, and the
first line of its docstring. The table follows ``__all__``, so an export
added or removed there shows up here without editing the page.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

# A single-backtick reference in a docstring (`.Name`, `~mod.Name.attr`);
# the summary loses its module context in the table, so it becomes code.
_REFERENCE = re.compile(r"(?<!`)`([~.]*)([^`]+)`(?!`)")


def _as_code(match: re.Match[str]) -> str:
    target = match.group(2)
    shown = target.rsplit(".", 1)[-1] if "~" in match.group(1) else target
    return f"``{shown}``"


class PackageExports(SphinxDirective):
    """A table of the package's exports, from its ``__all__``."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        package = importlib.import_module(self.arguments[0])
        rows: list[str] = []
        for name in package.__all__:
            if name.startswith("__"):
                continue
            obj = getattr(package, name)
            where = f"{obj.__module__}.{obj.__qualname__}"
            summary = (inspect.getdoc(obj) or "").strip().split("\n", 1)[0]
            summary = _REFERENCE.sub(_as_code, summary)
            rows += [f"   * - :py:obj:`~{where}`", f"     - {summary}"]
        lines = [".. list-table::", "   :widths: 1 3", ""]
        container = nodes.container()
        self.state.nested_parse(
            StringList(lines + rows, source=f"<package-exports {package.__name__}>"),
            self.content_offset,
            container,
        )
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("package-exports", PackageExports)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
