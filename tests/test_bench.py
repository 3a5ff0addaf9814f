"""Smoke tests of ``python -m tornado_echo.bench``, the benchmark.

The benchmark runs once, in ``--smoke`` mode, as a subprocess; the tests
then check from its ``results.json`` that every server answered and that
every run verified what it measured. They never assert on speed: numbers
from a shared test machine mean nothing, and benchmarks do not belong in
timed tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tornado_echo.bench import cli
from tornado_echo.bench.cli import main
from tornado_echo.bench.plan import FULL, make_plan, select_configs
from tornado_echo.bench.servers import (
    BenchFailure,
    ServerConfig,
    ServerKind,
    ServerProcess,
)
from tornado_echo.bench.workloads import closed_loop

#: Generous next to the ~15 s a smoke run takes, so a hung benchmark fails
#: the test instead of hanging the suite.
TIMEOUT = 120.0

#: The interpreter for the benchmark; deprecated APIs are errors, as in
#: test_cli, and the benchmark passes the option on to its servers.
PYTHON = (sys.executable, "-W", "error::DeprecationWarning")

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None

#: What a smoke run measures: every server, on asyncio's loop and, for a
#: few, on uvloop.
BYTE_SERVERS = {
    "asyncio-protocol",
    "asyncio-streams",
    "tornado-naive",
    "stream",
    "stream-public-api",
    "compat",
}
LINE_SERVERS = {"stream --lines", "compat --lines", "lineserver"}
if HAVE_UVLOOP:
    BYTE_SERVERS_ALL = BYTE_SERVERS | {
        "asyncio-protocol (uvloop)",
        "stream (uvloop)",
        "compat (uvloop)",
    }
    LINE_SERVERS_ALL = LINE_SERVERS | {"stream --lines (uvloop)", "lineserver (uvloop)"}
else:
    BYTE_SERVERS_ALL, LINE_SERVERS_ALL = BYTE_SERVERS, LINE_SERVERS
EXPECTED_SERVERS = BYTE_SERVERS_ALL | LINE_SERVERS_ALL

SMOKE_IDLE_CONNECTIONS = 200


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYTHON, "-m", "tornado_echo.bench", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,  # the status is part of what the tests check
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One ``--smoke`` run for the whole module: its results and its directory."""
    out = tmp_path_factory.mktemp("bench")
    proc = run_bench("--smoke", "--out", str(out))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads((out / "results.json").read_text()), out


def test_smoke_run_completes_and_every_server_answered(
    smoke: tuple[dict[str, Any], Path],
) -> None:
    results, _ = smoke
    assert results["complete"] is True
    assert results["stopped"] is None
    servers = {s["name"]: s for s in results["servers"]}
    assert set(servers) == EXPECTED_SERVERS
    for name, server in servers.items():
        assert server["answered"] is True, name
        # One process for the closed-loop runs, one more for the idle ones.
        assert server["exit_status"] in ([0], [0, 0]), name
    assert results["malloc_env"] == {
        "MALLOC_MMAP_THRESHOLD_": "1048576",
        "MALLOC_TRIM_THRESHOLD_": "16777216",
    }


def test_every_run_verified_what_it_measured(
    smoke: tuple[dict[str, Any], Path],
) -> None:
    results, _ = smoke
    runs = results["runs"]
    for run in runs:
        assert run["sent_bytes"] > 0, run
        assert run["verified_bytes"] == run["sent_bytes"], run
        assert run["round_trips"] > 0, run
        assert run["connections"] == 10, run
    # Byte servers at the smoke size; line servers, and the reference they
    # are compared with, at 64 B.
    measured = {(run["server"], run["size"]) for run in runs}
    expected = {(name, 1024) for name in BYTE_SERVERS_ALL}
    expected |= {(name, 64) for name in LINE_SERVERS_ALL}
    expected.add(("asyncio-protocol", 64))
    assert measured == expected
    assert len(runs) == len(expected)  # one repeat each
    # Each summary row has a ratio, since the reference ran beside it.
    for row in results["summary"]:
        assert row["ratio"] is not None and row["ratio"] > 0, row


def test_idle_servers_held_every_connection_and_echoed_a_sample(
    smoke: tuple[dict[str, Any], Path],
) -> None:
    results, _ = smoke
    idle = {r["server"]: r for r in results["idle"]}
    assert set(idle) == BYTE_SERVERS
    for name, result in idle.items():
        assert result["requested"] == SMOKE_IDLE_CONNECTIONS, name
        assert result["connections"] == SMOKE_IDLE_CONNECTIONS, name
        assert result["sample"] == 100, name
        assert result["sample_echoed"] == result["sample"], name
        assert result["rss_before"] > 0 and result["rss_after"] > 0, name


def test_markdown_leads_with_the_ratio(smoke: tuple[dict[str, Any], Path]) -> None:
    _, out = smoke
    markdown = (out / "results.md").read_text()
    assert "| × asyncio-protocol | CPU/rt × | server | round trips/s |" in markdown
    assert "| × asyncio-protocol | server | bytes/connection |" in markdown
    for name in EXPECTED_SERVERS:
        assert f" {name} |" in markdown or f" **{name}** |" in markdown, name
    assert (out / "results.txt").exists()


def test_time_limit_stops_the_run_and_writes_what_finished(tmp_path: Path) -> None:
    proc = run_bench(
        "--smoke", "--servers", "stream", "--time-limit", "1", "--out", str(tmp_path)
    )
    assert proc.returncode == 1, proc.stderr
    assert "bench: stopped: the time limit of 1 s was reached" in proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["complete"] is False
    assert "time limit" in results["stopped"]
    # Stopped early, yet every server was stopped and reaped.
    for server in results["servers"]:
        assert len(server["exit_status"]) == 1, server
        assert server["exit_status"][0] is not None, server


_WRONG_ECHO = '''
    """Echoes every byte but the first of each read, then a wrong one."""
    import socket
    import sys

    listener = socket.create_server(("127.0.0.1", 0))
    print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", file=sys.stderr,
          flush=True)
    conn, _ = listener.accept()
    while data := conn.recv(65536):
        conn.sendall(b"?" + data[1:])
'''


def test_a_server_that_corrupts_the_echo_fails_the_run(tmp_path: Path) -> None:
    (tmp_path / "wrong_echo.py").write_text(textwrap.dedent(_WRONG_ECHO))
    kind = ServerKind(
        "wrong-echo", ("wrong_echo",), lines=False, ours=False, uvloop_by_default=False
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    with (
        ServerProcess(ServerConfig(kind), env=env) as server,
        pytest.raises(BenchFailure, match="other bytes than were sent") as raised,
    ):
        closed_loop(
            server,
            repeat=0,
            size=64,
            connections=1,
            warmup=0.0,
            duration=0.2,
            client_cpu=None,
        )
    assert raised.value.args[0].startswith("wrong-echo, 64 B × 1 connections: ")


def test_unknown_server_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--servers", "stream,nginx"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "argument --servers: unknown server 'nginx'" in err
    assert "known: asyncio-protocol," in err


def test_bad_size_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--sizes", "64,huge"])
    assert raised.value.code == 2
    assert "argument --sizes: not a size in bytes: 'huge'" in capsys.readouterr().err


def test_uvloop_asked_for_but_missing_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "uvloop_installed", lambda: False)
    with pytest.raises(SystemExit) as raised:
        main(["--loops", "asyncio,uvloop"])
    assert raised.value.code == 2
    assert "uvloop was asked for but is not installed" in capsys.readouterr().err


def test_the_full_run_interleaves_servers_and_measures_lines_at_64_bytes() -> None:
    configs = select_configs(None, None, uvloop=True)
    plan = make_plan(FULL, configs)
    names = [c.name for c in configs]
    assert names[0] == "asyncio-protocol"
    assert set(names) == BYTE_SERVERS | LINE_SERVERS | {
        "asyncio-protocol (uvloop)",
        "stream (uvloop)",
        "compat (uvloop)",
        "stream --lines (uvloop)",
        "lineserver (uvloop)",
    }
    per_repeat: list[list[tuple[int, int, str]]] = [[], [], []]
    for step in plan.steps:
        per_repeat[step.repeat].append((step.size, step.connections, step.config.name))
    # Repeats come one after another, each with the same runs.
    assert [step.repeat for step in plan.steps] == sorted(s.repeat for s in plan.steps)
    assert len({frozenset(runs) for runs in per_repeat}) == 1
    runs = set(per_repeat[0])
    assert len(runs) == len(per_repeat[0]) == 41
    for size, connections, name in runs:
        if name.split(" (")[0] in LINE_SERVERS:
            assert (size, connections) == (64, 10), name
        else:
            assert (size, connections) in {
                (64, 10),
                (1024, 10),
                (16384, 10),
                (1024, 100),
            }
    # Never the same server twice in a row: each (size, connections) point
    # runs every server once before the next point.
    for a, b in zip(plan.steps, plan.steps[1:]):
        assert a.config != b.config
    assert {c.name for c in plan.idle} == BYTE_SERVERS
