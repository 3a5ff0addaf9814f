"""The rendered docs, as a browser shows them: checks on the built HTML.

The site is built by ``.ci/run`` (``sphinx-build -W``), which then runs this
module with ``TORNADO_ECHO_DOCS_HTML`` pointing at the build; elsewhere it is
skipped, since building takes a while and needs the ``docs`` extra.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import pytest

_BUILD = os.environ.get("TORNADO_ECHO_DOCS_HTML")

pytestmark = pytest.mark.skipif(
    not _BUILD, reason="set TORNADO_ECHO_DOCS_HTML to a sphinx-build html directory"
)


def _page(name: str) -> str:
    assert _BUILD is not None
    return (Path(_BUILD) / name).read_text(encoding="utf-8")


def _definitions(page: str) -> list[str]:
    """The ids of the API entries on ``page``, in the order they appear."""
    return re.findall(r'<dt class="sig sig-object py" id="([^"]+)"', _page(page))


def test_an_option_never_wraps_after_its_leading_dashes() -> None:
    css = re.findall(r'href="(_static/[^"]+\.css)[^"]*"', _page("cli.html"))
    rules = "".join(_page(path) for path in css)
    # The option links in running text, and the option headings.
    assert re.search(r"code\.std-option[^{]*\{[^}]*white-space:\s*nowrap", rules)
    assert re.search(r"dt\.std \.sig-name[^{]*\{[^}]*white-space:\s*nowrap", rules)
    assert 'class="xref std std-option' in _page("quickstart.html")


def test_every_cli_option_has_help_beyond_its_default() -> None:
    page = html.unescape(re.sub(r"<[^>]+>", "", _page("cli.html")))
    section = page.split("--log-level", 2)[2]
    assert "least severe messages" in section.split("--version", 1)[0]
    assert "''" not in page


def test_the_lineserver_page_starts_with_lineserver_and_types_its_attributes() -> None:
    ids = _definitions("api/lineserver.html")
    assert ids[0] == "tornado_echo.lineserver.LineServer", ids
    # The driver contract is not a protocol author's business.
    assert "tornado_echo.lineserver.LineServer.track_connection" not in ids
    page = html.unescape(re.sub(r"<[^>]+>", "", _page("api/lineserver.html")))
    for attribute in ("address: Any", "lines: int", "lines_too_long: int"):
        assert attribute in page
    assert "connection_class: type[LineConnection]" in page
    assert "State shared by every connection" in page
