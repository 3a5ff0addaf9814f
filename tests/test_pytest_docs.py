"""The testing examples in README.md and the quick start, run as a new user would.

Each example file there is a code block whose first line is a comment naming
the file (``# test_upper.py``, ``# pyproject.toml``). These tests write
exactly those files, verbatim and nothing else, into an empty directory and
run pytest there: an example that leans on a name defined elsewhere, or a
setting the docs leave out, fails here as it would for the user.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from _pytest_project import run_pytest

import tornado_echo.pytest_plugin

ROOT = Path(__file__).resolve().parent.parent

#: The first line of an example file: a comment that names it.
FILE_COMMENT = re.compile(r"# (?P<name>[\w-]+\.(?:py|toml|ini))\n")


def readme_section() -> str:
    """README.md's "Testing your protocol", up to the next heading."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Testing your protocol\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def quickstart_section() -> str:
    """docs/quickstart.rst's "Testing it", up to the next section."""
    text = (ROOT / "docs" / "quickstart.rst").read_text()
    start = text.index("\nTesting it\n----------\n")
    following = re.compile(r"^\S.*\n[-=~^]{3,}\n", re.MULTILINE)
    after = following.search(text, start + len("\nTesting it\n----------\n"))
    return text[start : after.start() if after else len(text)]


def markdown_blocks(text: str) -> list[str]:
    return re.findall(r"^```\w*\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def rst_blocks(text: str) -> list[str]:
    # A code-block directive, a blank line, then the indented body up to the
    # first line that is not indented.
    pattern = r"^\.\. code-block:: \w+\n\n((?:(?: {3,}.*)?\n)+)"
    return [
        textwrap.dedent(body).strip("\n") + "\n"
        for body in re.findall(pattern, text, re.MULTILINE)
    ]


def example_files(blocks: list[str]) -> dict[str, str]:
    """The blocks that name their file, by name."""
    files: dict[str, str] = {}
    for block in blocks:
        named = FILE_COMMENT.match(block)
        if named:
            assert named["name"] not in files, f"two examples are {named['name']}"
            files[named["name"]] = block
    return files


#: Each document: its example files, and how many tests they hold.
DOCS = {
    "README.md": (
        lambda: example_files(markdown_blocks(readme_section())),
        {
            "pyproject.toml",
            "test_upper_tornado.py",
            "test_upper.py",
            "test_upper_crlf.py",
        },
        3,
    ),
    "docs/quickstart.rst": (
        lambda: example_files(rst_blocks(quickstart_section())),
        {"pyproject.toml", "test_upper_tornado.py", "test_upper.py"},
        2,
    ),
}


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_documented_examples_pass_without_warnings_in_an_empty_project(
    tmp_path: Path, doc: str
) -> None:
    extract, names, tests = DOCS[doc]
    files = extract()
    assert set(files) == names, f"{doc}'s example files changed: update this test"
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    run = run_pytest(tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert f"rootdir: {tmp_path}\nconfigfile: pyproject.toml\n" in run.stdout
    assert f" {tests} passed in " in run.stdout, output
    assert "warning" not in output.lower(), output


def test_strict_mode_needs_the_asyncio_mark_that_the_readme_names(
    tmp_path: Path,
) -> None:
    example = example_files(markdown_blocks(readme_section()))["test_upper.py"]
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    )
    # pytest-asyncio's default mode: the example as it stands fails...
    (tmp_path / "test_upper.py").write_text(example)
    # ...and passes with the mark the README says strict mode needs.
    marked = example.replace(
        "\nasync def test_", "\n@pytest.mark.asyncio\nasync def test_"
    )
    assert marked.count("@pytest.mark.asyncio") == 1
    (tmp_path / "test_upper_marked.py").write_text(marked)
    run = run_pytest(tmp_path)
    output = run.stdout + run.stderr
    assert "1 failed, 1 passed in " in run.stdout, output
    assert "FAILED test_upper.py::test_upper" in run.stdout, output
    assert "async def functions are not natively supported" in run.stdout
    readme = readme_section()
    assert "`@pytest.mark.asyncio`" in readme
    assert "`@pytest_asyncio.fixture`" in readme


#: Every fixture the plugin offers.
FIXTURES = {
    "tcp_server",
    "tcp_address",
    "tcp_client",
    "tcp_client_options",
    "start_tcp_server",
    "open_tcp_client",
}


def test_the_plugin_offers_the_documented_fixtures() -> None:
    public = {
        name
        for name, value in vars(tornado_echo.pytest_plugin).items()
        if not name.startswith("_")
        and callable(value)
        and not isinstance(value, type)
        and getattr(value, "__module__", None) == tornado_echo.pytest_plugin.__name__
    }
    assert public == FIXTURES


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_every_fixture_is_documented_as_a_fixture(name: str) -> None:
    page = (ROOT / "docs" / "api" / "pytest_plugin.rst").read_text()
    assert (
        f".. autodata:: tornado_echo.pytest_plugin.{name}\n   :annotation: (fixture)\n"
        in page
    )
    assert f"\n| `{name}` | " in readme_section()


def test_the_plugin_page_covers_strict_mode_and_the_delimiter() -> None:
    # The page renders the module docstring.
    doc = tornado_echo.pytest_plugin.__doc__ or ""
    assert 'asyncio_mode = "auto"' in doc
    assert 'asyncio_default_fixture_loop_scope = "function"' in doc
    assert "``@pytest.mark.asyncio``" in doc
    assert "``@pytest_asyncio.fixture``" in doc
    assert 'def tcp_client_options():\n        return {"delimiter": b"\\r\\n"}' in doc
