"""``.. argparse-options::``: a command's options, read from its real parser.

The CLI reference is rendered from the ``argparse.ArgumentParser`` the
command itself builds, so it cannot drift from the code::

    .. argparse-options:: tornado_echo.cli:build_parser

The directive imports the module, calls the function (which must only
build the parser), and emits the usage, the description and one
``.. option::`` per argument, under a ``.. program::`` named after the
parser's ``prog``. Help texts are shown as ``--help`` prints them, with the
options they mention linked, and what they quote (``'stream,compat
--lines'``) shown whole as code, since it is typed as it stands: an option
inside a quoted value is part of the value, not this command's option. Any
option can be linked from elsewhere with ``:option:`tornado-echo --port```.
"""

from __future__ import annotations

import argparse
import importlib
import re
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

# A fixed width, so the usage block does not depend on the terminal that
# runs the build.
_USAGE_WIDTH = 78

# Help texts are plain text: these characters would otherwise be reST markup.
_RST_SPECIAL = re.compile(r"([\\`*_|\[\]<>])")

# An option named in a help text, like "--host" in "without --host or --port".
_OPTION_NAME = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")

# A value quoted in a help text, like 'stream,compat --lines' or "a b": the
# quotes stand apart from words, so the apostrophe of "asyncio's" opens
# nothing. Backticks are left out: they cannot be inside an inline literal.
_QUOTED = re.compile(r"""(?<![\w'"])(['"])([^'"`\n]*[^'"`\s])\1(?!\w)""")


def _escape(text: str) -> str:
    return _RST_SPECIAL.sub(r"\\\1", text)


def _help_to_rst(text: str, known: set[str]) -> str:
    """``text`` as reST: escaped, with the options it names linked, and
    what it quotes shown whole as code."""
    out: list[str] = []
    position = 0
    for match in _QUOTED.finditer(text):
        # "\ " joins inline markup to the text around it, with no space.
        out += [_link_options(text[position : match.start()], known)]
        out += [rf"\ ``{match.group(0)}``\ "]
        position = match.end()
    out.append(_link_options(text[position:], known))
    return "".join(out)


def _link_options(text: str, known: set[str]) -> str:
    """``text`` as reST: escaped, with the options it names linked."""
    out: list[str] = []
    position = 0
    for match in _OPTION_NAME.finditer(text):
        name = match.group(0)
        # The ".. program::" emitted first makes the bare option name resolve.
        role = f":option:`{name}`" if name in known else f"``{name}``"
        out += [_escape(text[position : match.start()]), rf"\ {role}\ "]
        position = match.end()
    out.append(_escape(text[position:]))
    return "".join(out)


def _expand_help(action: argparse.Action, prog: str) -> str:
    """The help text with ``%(default)s`` and the like filled in, as --help does."""
    if not action.help:
        return ""
    params: dict[str, Any] = {
        key: getattr(value, "__name__", value)
        for key, value in vars(action).items()
        if value is not argparse.SUPPRESS
    }
    params["prog"] = prog
    if action.choices is not None:
        params["choices"] = ", ".join(str(c) for c in action.choices)
    return action.help % params


def _signature(action: argparse.Action) -> str:
    """``--port PORT``, ``--impl {stream,compat}``, ``-h, --help``."""
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    if action.metavar is not None:
        metavar = str(action.metavar)
    elif action.choices is not None:
        metavar = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        metavar = action.dest.upper()
    return ", ".join(f"{option} {metavar}" for option in action.option_strings)


def _load_parser(target: str) -> argparse.ArgumentParser:
    module_name, _, function_name = target.partition(":")
    if not function_name:
        raise ValueError(f"expected module:function, not {target!r}")
    parser = getattr(importlib.import_module(module_name), function_name)()
    if not isinstance(parser, argparse.ArgumentParser):
        raise TypeError(f"{target} returned {parser!r}, not an ArgumentParser")
    return parser


def _groups(
    parser: argparse.ArgumentParser,
) -> list[tuple[str, str | None, list[argparse.Action]]]:
    """(title, description, actions) per group: the named groups first, then
    the options added to the parser itself, as "Other options"."""
    # argparse has no public way to list its groups; _action_groups and
    # _group_actions are what --help itself walks, unchanged since 2.7.
    named = []
    general: list[argparse.Action] = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS]
        if group is parser._optionals:
            general = actions
        elif actions:
            named.append((group.title or "", group.description, actions))
    if any(a.option_strings for a in general):
        named.append(("other options", None, general))
    return named


class ArgparseOptions(SphinxDirective):
    """Render the options of the parser that ``module:function`` returns."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        target = self.arguments[0]
        try:
            parser = _load_parser(target)
        except Exception as exc:
            raise self.error(f"argparse-options: cannot load {target}: {exc}") from exc
        # Rebuild this page when the parser's module changes.
        module_file = importlib.import_module(target.partition(":")[0]).__file__
        if module_file:
            self.env.note_dependency(module_file)
        prog = parser.prog
        known = {o for a in parser._actions for o in a.option_strings}
        parser.formatter_class = lambda prog: argparse.HelpFormatter(
            prog, width=_USAGE_WIDTH
        )

        lines = [f".. program:: {prog}", "", ".. code-block:: text", ""]
        lines += ["   " + line for line in parser.format_usage().rstrip().splitlines()]
        lines.append("")
        if parser.description:
            lines += [_help_to_rst(parser.description, known), ""]
        for title, description, actions in _groups(parser):
            lines += [f".. rubric:: {_escape(title[:1].upper() + title[1:])}", ""]
            if description:
                lines += [_help_to_rst(description, known), ""]
            for action in actions:
                lines += [f".. option:: {_signature(action)}", ""]
                help_text = _expand_help(action, prog)
                if help_text:
                    lines += ["   " + _help_to_rst(help_text, known), ""]

        container = nodes.section()
        container.document = self.state.document
        source = f"<argparse-options {target}>"
        nested_parse_with_titles(self.state, StringList(lines, source), container)
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("argparse-options", ArgparseOptions)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
