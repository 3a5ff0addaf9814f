"""The installed distribution: one version everywhere, and complete metadata.

``.ci/run`` also builds the sdist and wheel, checks them with
``twine check --strict``, and runs this suite from the sdist against the
installed wheel.
"""

from __future__ import annotations

from importlib.metadata import metadata, version

from _proc import run
from test_cli import module_command, script_command

import tornado_echo


def test_package_metadata_and_the_cli_report_one_version() -> None:
    installed = version("tornado_echo")
    assert installed == tornado_echo.__version__
    for command in (module_command("--version"), script_command("--version")):
        result = run(command)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == installed


def test_metadata_names_the_license_pythons_and_project_urls() -> None:
    meta = metadata("tornado_echo")
    assert meta["License"] == "Apache-2.0"
    assert meta["Requires-Python"] == ">=3.11"
    classifiers = set(meta.get_all("Classifier") or [])
    for minor in (11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert "Typing :: Typed" in classifiers
    urls = dict(entry.split(", ", 1) for entry in meta.get_all("Project-URL") or [])
    assert set(urls) >= {"Documentation", "Source", "Changelog", "Issues"}
    assert all(url.startswith("https://") for url in urls.values())
