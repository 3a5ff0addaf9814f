"""Smoke tests of ``python -m tornado_echo.bench``, the benchmark.

The benchmark runs once, in ``--smoke`` mode, as a subprocess; the tests
then check from its ``results.json`` that every server answered and that
every run verified what it measured. They never assert on speed: numbers
from a shared test machine mean nothing, and benchmarks do not belong in
timed tests.
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import os
import select
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tornado_echo.bench import chart, cli, client, servers
from tornado_echo.bench import report as report_module
from tornado_echo.bench.cli import main
from tornado_echo.bench.line_peers import KINDS as LINE_PEER_KINDS
from tornado_echo.bench.plan import FULL, Plan, make_plan, select_configs
from tornado_echo.bench.report import Report
from tornado_echo.bench.servers import (
    KINDS,
    BenchFailure,
    ServerConfig,
    ServerKind,
    ServerProcess,
    kind_named,
    unavailable,
)
from tornado_echo.bench.workloads import (
    BulkResult,
    FairnessResult,
    RunResult,
    StuckResult,
    closed_loop,
    result_fields,
)
from tornado_echo.loops import LoopName

#: Generous next to the ~15 s a smoke run takes, so a hung benchmark fails
#: the test instead of hanging the suite.
TIMEOUT = 120.0

#: The interpreter for the benchmark; deprecated APIs are errors, as in
#: test_cli, and the benchmark passes the option on to its servers.
PYTHON = (sys.executable, "-W", "error::DeprecationWarning")

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

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
OUR_LINE_SERVERS = {"stream --lines", "compat --lines", "lineserver"}
#: The line-protocol peers, and those whose framework is installed here: a
#: run leaves the others out.
LINE_PEERS = set(LINE_PEER_KINDS)
INSTALLED_PEERS = {name for name in LINE_PEERS if unavailable(kind_named(name)) is None}
LINE_SERVERS = OUR_LINE_SERVERS | LINE_PEERS
if HAVE_UVLOOP:
    BYTE_SERVERS_ALL = BYTE_SERVERS | {
        "asyncio-protocol (uvloop)",
        "stream (uvloop)",
        "compat (uvloop)",
    }
    LINE_SERVERS_ALL = OUR_LINE_SERVERS | INSTALLED_PEERS
    LINE_SERVERS_ALL |= {
        "stream --lines (uvloop)",
        "lineserver (uvloop)",
        "asyncio-readline (uvloop)",
    }
else:
    BYTE_SERVERS_ALL = BYTE_SERVERS
    LINE_SERVERS_ALL = OUR_LINE_SERVERS | INSTALLED_PEERS
EXPECTED_SERVERS = BYTE_SERVERS_ALL | LINE_SERVERS_ALL

#: The pipelined point of a smoke run: 16 lines of 64 B in each write.
PIPELINE = 16

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
    # The pressure workloads have a smoke run of their own, on fewer servers.
    proc = run_bench("--smoke", "--pressure", "none", "--out", str(out))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads((out / "results.json").read_text()), out


@pytest.mark.skipif(
    not os.environ.get("TORNADO_ECHO_REQUIRE_TOOLS"),
    reason="outside CI, a peer that is not installed is left out",
)
def test_ci_has_every_line_peer_so_that_the_smoke_run_covers_them() -> None:
    assert INSTALLED_PEERS == LINE_PEERS


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
    # Byte servers at the smoke size; line servers (ours and every peer
    # installed), and the reference they are compared with, at 64 B lines
    # and at 16 of them in each write.
    measured = {(run["server"], run["size"], run["pipeline"]) for run in runs}
    expected = {(name, 1024, 1) for name in BYTE_SERVERS_ALL}
    for point in ((64, 1), (64 * PIPELINE, PIPELINE)):
        expected |= {(name, *point) for name in LINE_SERVERS_ALL | {"asyncio-protocol"}}
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
    assert set(idle) == BYTE_SERVERS | {"lineserver"} | INSTALLED_PEERS
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
    # The line-protocol table, the pipelined point only there.
    lines = markdown.split("## Line protocols", 1)[1].split("\n## ", 1)[0]
    assert "### 64 B lines × 10 connections" in lines
    assert "### 16 × 64 B lines per write × 10 connections" in lines
    assert "| × asyncio-protocol | × asyncio-readline | server | lines/s |" in lines
    for name in LINE_SERVERS_ALL:
        assert f" {name} |" in lines or f" **{name}** |" in lines, name
    assert markdown.count("16 × 64 B lines") == 1
    line_rows = json.loads((out / "results.json").read_text())["lines"]["summary"]
    assert {row["server"] for row in line_rows} == LINE_SERVERS_ALL
    for row in line_rows:
        assert row["yardstick_ratio"] is not None and row["yardstick_ratio"] > 0, row


def test_time_limit_stops_the_run_and_writes_what_finished(tmp_path: Path) -> None:
    proc = run_bench(
        "--smoke", "--servers", "stream", "--time-limit", "1", "--out", str(tmp_path)
    )
    assert proc.returncode == 1, proc.stderr
    assert "bench: stopped: the time limit of 1 s was reached" in proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["complete"] is False
    assert "time limit" in results["stopped"]
    # Stopped early, yet every server that was started was stopped and
    # reaped; the closed loop's were started, the later workloads' were not.
    statuses = {s["name"]: s["exit_status"] for s in results["servers"]}
    assert len(statuses["stream"]) == 1, statuses
    for name, status in statuses.items():
        assert len(status) <= 1 and None not in status, (name, status)


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


def test_the_full_run_interleaves_servers_and_measures_the_line_points() -> None:
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
        "asyncio-readline (uvloop)",
    }
    per_repeat: list[list[tuple[int, int, int, str]]] = [[], [], []]
    for step in plan.steps:
        per_repeat[step.repeat].append(
            (step.size, step.connections, step.pipeline, step.config.name)
        )
    # Repeats come one after another, each with the same runs.
    assert [step.repeat for step in plan.steps] == sorted(s.repeat for s in plan.steps)
    assert len({frozenset(runs) for runs in per_repeat}) == 1
    runs = set(per_repeat[0])
    # 41 with the byte servers, 41 for the line section.
    assert len(runs) == len(per_repeat[0]) == 82
    line_points = {(64, 10, 1), (1024, 10, 1), (64, 100, 1), (1024, 10, 16)}
    byte_points = {(64, 10, 1), (1024, 10, 1), (16384, 10, 1), (1024, 100, 1)}
    points: dict[tuple[int, int, int], set[str]] = {}
    for size, connections, pipeline, name in runs:
        points.setdefault((size, connections, pipeline), set()).add(name)
        if name == "asyncio-protocol":
            continue  # at every point: every ratio is to it
        expected = line_points if name.split(" (")[0] in LINE_SERVERS else byte_points
        assert (size, connections, pipeline) in expected, name
    # Every line server at every line point, next to the reference.
    lines = {name for name in names if name.split(" (")[0] in LINE_SERVERS}
    for point in line_points:
        assert lines | {"asyncio-protocol"} <= points[point], point
    # Never the same server twice in a row: each point runs every server
    # once before the next point.
    for a, b in zip(plan.steps, plan.steps[1:]):
        assert a.config != b.config
    assert {c.name for c in plan.idle} == BYTE_SERVERS | {"lineserver"} | LINE_PEERS


def test_selecting_a_line_server_brings_asyncio_readline_on_its_loop() -> None:
    plan = make_plan(
        FULL, select_configs(["lineserver (uvloop)", "gevent"], None, True)
    )
    assert {c.name for c in plan.configs} == {
        "asyncio-protocol",
        "gevent",
        "lineserver (uvloop)",
        # gevent brings its own loop, so it is compared on asyncio's.
        "asyncio-readline",
        "asyncio-readline (uvloop)",
    }
    # A peer with its own loop is never run on uvloop, nor offered there.
    assert "gevent (uvloop)" not in cli._KNOWN
    assert "twisted-linereceiver (uvloop)" not in cli._KNOWN
    assert "anyio-asyncio (uvloop)" in cli._KNOWN
    assert not any(
        c.kind.name == "anyio-trio" for c in select_configs(None, ["uvloop"], True)
    )
    assert ServerConfig(kind_named("gevent")).argv()[-3:] == ["gevent", "--port", "0"]


# --- the pressure workloads ---------------------------------------------------

#: A smoke run of the pressure workloads: one byte server and one line
#: server were selected; compat (the byte servers' fairness yardstick) and
#: the reference (bulk's) come with them.
PRESSURE_ARGS = ("--servers", "stream,compat --lines", "--sizes", "64", "--idle", "0")


@pytest.fixture(scope="module")
def pressure(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench-pressure")
    proc = run_bench("--smoke", *PRESSURE_ARGS, "--duration", "0.2", "--out", str(out))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "## A light client under a flood (4 connections)" in proc.stdout
    return json.loads((out / "results.json").read_text()), out


def test_pressure_smoke_run_measured_and_verified_every_workload(
    pressure: tuple[dict[str, Any], Path],
) -> None:
    results, _ = pressure
    assert results["complete"] is True
    servers = {s["name"]: s for s in results["servers"]}
    # asyncio-readline: the closed loop's yardstick of line servers.
    expected = {"asyncio-protocol", "stream", "compat", "compat --lines"}
    expected.add("asyncio-readline")
    if HAVE_UVLOOP:
        # The closed loop measures stream on uvloop too; pressure does not.
        expected.add("stream (uvloop)")
    assert set(servers) == expected
    for name, server in servers.items():
        assert server["answered"] is True, name
        assert server["exit_status"] and set(server["exit_status"]) == {0}, name
    fair = {run["server"]: run for run in results["fairness"]["runs"]}
    assert fair.keys() == {"stream", "compat", "compat --lines"}
    for name, run in fair.items():
        assert run["yardstick"] == ("compat --lines" if "lines" in name else "compat")
        assert run["connections"] == 4, name
        assert run["probes"] > 0 and 0 < run["p50_ms"] <= run["p99_ms"], name
        assert run["probe_verified_bytes"] == run["probe_sent_bytes"] > 0, name
        assert run["flood_bytes"] > 0, name
    for row in results["fairness"]["summary"]:
        assert row["ratio"] is not None and row["ratio"] > 0, row
    bulk = {run["server"]: run for run in results["bulk"]["runs"]}
    assert bulk.keys() == {"asyncio-protocol", "stream"}
    for name, run in bulk.items():
        assert run["verified_bytes"] == run["sent_bytes"] > 0, name
        assert run["echoed_bytes"] > 0 and run["server_cpu"] is not None, name
    assert all(row["ratio"] > 0 for row in results["bulk"]["summary"])
    stuck = {result["server"]: result for result in results["stuck"]}
    assert stuck.keys() == {"stream", "compat --lines"}
    for name, result in stuck.items():
        assert result["clients"] == 50, name
        assert 0 < result["sent_bytes"] <= 50 << 20, name
        assert min(result["rss_start"], result["rss_held"], result["rss_after"]) > 0


def test_pressure_tables_are_written(pressure: tuple[dict[str, Any], Path]) -> None:
    _, out = pressure
    markdown = (out / "results.md").read_text()
    assert "| p99 × yardstick | yardstick | server | p50 ms |" in markdown
    assert "| × asyncio-protocol | server | MiB/s | server CPU µs/MiB |" in markdown
    assert "| server | bytes/client | taken MiB/client |" in markdown
    assert "## Clients that never read (50 clients × 1 MiB)" in markdown
    text = (out / "results.txt").read_text()
    assert "bulk throughput on one connection" in text
    assert "clients that never read (50 clients × 1 MiB)" in text


def _plan(*argv: str) -> Plan:
    parser = cli.build_parser()
    args = parser.parse_args(argv)
    plan, _ = cli._plan(parser, args, cli._settings(args))
    return plan


def test_the_full_run_interleaves_the_pressure_workloads_on_asyncio() -> None:
    plan = _plan()
    fairness = {"asyncio-protocol", "asyncio-streams"} | OUR_LINE_SERVERS
    fairness |= {"stream", "stream-public-api", "compat"}
    for repeat in range(FULL.repeat):
        steps = [s for s in plan.pressure if s.repeat == repeat]
        workloads = [step.workload for step in steps]
        # Per repeat, every fairness run, then every bulk run.
        assert workloads == ["fairness"] * 8 + ["bulk"] * 6
        names = {
            w: [s.config.name for s in steps if s.workload == w] for w in workloads
        }
        assert set(names["fairness"]) == fairness
        assert len(names["fairness"]) == len(fairness)
        assert set(names["bulk"]) == BYTE_SERVERS
        # Each repeat starts the rotation one server further on.
        first = [s for s in plan.pressure if s.repeat == 0 and s.workload == "bulk"]
        order = [s.config.name for s in first]
        assert names["bulk"] == order[repeat:] + order[:repeat]
    assert len(plan.pressure) == FULL.repeat * (8 + 6)
    assert {c.name for c in plan.stuck} == (BYTE_SERVERS | OUR_LINE_SERVERS) - {
        "stream-public-api"
    }
    assert all(s.config.loop == "asyncio" for s in plan.pressure)
    assert all(c.loop == "asyncio" for c in plan.stuck)


def test_pressure_keeps_the_yardsticks_of_the_servers_selected() -> None:
    def workloads(plan: Plan) -> dict[str, set[str]]:
        got: dict[str, set[str]] = {"fairness": set(), "bulk": set()}
        for step in plan.pressure:
            got[step.workload].add(step.config.name)
        return {**got, "stuck": {c.name for c in plan.stuck}}

    assert workloads(_plan("--servers", "stream")) == {
        "fairness": {"stream", "compat"},
        "bulk": {"stream", "asyncio-protocol"},
        "stuck": {"stream"},
    }
    assert workloads(_plan("--servers", "stream --lines")) == {
        "fairness": {"stream --lines", "compat --lines"},
        "bulk": set(),
        "stuck": {"stream --lines"},
    }
    assert workloads(_plan("--servers", "tornado-naive")) == {
        "fairness": set(),
        "bulk": {"tornado-naive", "asyncio-protocol"},
        "stuck": {"tornado-naive"},
    }
    # On uvloop only if asked for; the yardsticks stay on asyncio's loop.
    if HAVE_UVLOOP:
        assert workloads(_plan("--servers", "stream (uvloop)")) == {
            "fairness": {"stream (uvloop)", "compat"},
            "bulk": {"stream (uvloop)", "asyncio-protocol"},
            "stuck": {"stream (uvloop)"},
        }
    plan = _plan("--servers", "stream", "--pressure", "bulk,stuck")
    assert {s.workload for s in plan.pressure} == {"bulk"} and plan.stuck
    plan = _plan("--pressure", "none")
    assert plan.pressure == () and plan.stuck == ()
    # Servers started only for the pressure workloads are in the report too.
    assert "compat" in {c.name for c in _plan("--servers", "stream").servers}


@pytest.mark.parametrize("value", ["fast", "none,bulk", ""])
def test_bad_pressure_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--pressure", value])
    assert raised.value.code == 2
    assert "argument --pressure: " in capsys.readouterr().err


def _fairness(server: str, repeat: int, p99_ms: float) -> FairnessResult:
    return FairnessResult(
        server=server,
        repeat=repeat,
        yardstick="compat" if server in BYTE_SERVERS else "compat --lines",
        connections=16,
        probes=500,
        p50_ms=p99_ms / 2,
        p99_ms=p99_ms,
        probe_elapsed=3.0,
        probe_sent_bytes=32_000,
        probe_verified_bytes=32_000,
        flood_bytes=3 << 30,
        flood_elapsed=3.0,
    )


def _bulk(server: str, repeat: int, mib_per_s: float) -> BulkResult:
    return BulkResult(
        server=server,
        repeat=repeat,
        echoed_bytes=int(mib_per_s * 1.5 * (1 << 20)),
        elapsed=1.5,
        server_cpu=0.75,
        client_cpu=0.95 if server == "stream" else 0.5,
        sent_bytes=1 << 30,
        verified_bytes=1 << 30,
    )


def test_report_tables_of_the_pressure_workloads() -> None:
    names = ["asyncio-protocol", "stream", "compat", "compat --lines", "lineserver"]
    report = Report(
        servers=[ServerConfig(kind_named(name)) for name in names],
        settings={"repeat": 2},
        machine={},
        malloc_env={},
    )
    # Ratios are taken within a repeat: stream is 2x compat in both, however
    # slow the second repeat was; lineserver has no yardstick run.
    for repeat, scale in enumerate((1.0, 3.0)):
        report.fairness += [
            _fairness("compat", repeat, 2.0 * scale),
            _fairness("stream", repeat, 4.0 * scale),
            _fairness("compat --lines", repeat, 5.0 * scale),
        ]
        report.bulk += [
            _bulk("asyncio-protocol", repeat, 1000.0 * scale),
            _bulk("stream", repeat, 900.0 * scale),
        ]
    report.fairness.append(_fairness("lineserver", 2, 1.0))
    report.stuck = [
        StuckResult("stream", 200, 200 << 20, 30 << 20, 54 << 20, 31 << 20, 0.5),
        StuckResult(
            "asyncio-protocol", 200, 200 << 20, 30 << 20, 230 << 20, 229 << 20, None
        ),
    ]
    fair = {row.server: row for row in report.fairness_rows()}
    assert list(fair) == ["stream", "compat", "compat --lines", "lineserver"]
    assert fair["stream"].ratio == pytest.approx(2.0)
    assert fair["stream"].ratios == pytest.approx((2.0, 2.0))
    assert fair["stream"].p99_ms == pytest.approx(8.0)  # the median of 4 and 12
    assert fair["compat --lines"].ratio == pytest.approx(1.0)
    assert fair["lineserver"].ratio is None
    bulk = {row.server: row for row in report.bulk_rows()}
    assert bulk["stream"].ratio == pytest.approx(0.9)
    assert bulk["stream"].client_bound and not bulk["asyncio-protocol"].client_bound
    assert [r.server for r in report.stuck_results()] == ["asyncio-protocol", "stream"]
    assert report.stuck_results()[1].bytes_per_client == (24 << 20) / 200
    markdown = report.to_markdown()
    assert "| 2.00× | compat | **stream** | 4.00 | 8.00 | 500 | 1,024 |" in markdown
    assert "| n/a | compat --lines | **lineserver** |" in markdown
    assert "| 0.90× | **stream** | 1,800 | 370 | 50% | 95% | client-bound² |" in (
        markdown
    )
    assert "| **stream** | 125,829 | 1.00 | 30.0 | 54.0 | 31.0 | in 0.5 s |" in markdown
    assert "| asyncio-protocol | 1,048,576 | 1.00 |" in markdown
    assert "| 229.0 | not in 10 s |" in markdown
    text = report.to_text()
    assert "stream *" in text and "not in 10 s" in text
    data = report.to_json()
    assert {"fairness", "bulk", "stuck"} <= data.keys()
    assert isinstance(data["stuck"], list) and len(data["stuck"]) == 2
    answered = report.answered()
    assert answered["lineserver"] and answered["compat --lines"]


# --- the client's load: measured as a share, clamped, and flagged when noisy ---

_HOG = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
print("spinning", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    pass
"""


def test_client_busy_stays_a_share_while_another_process_has_the_clients_core() -> None:
    # The busy share once subtracted wall-clock idle time from CPU time, and
    # came out negative whenever something else ran on the client's core.
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = cpus[0], cpus[-1]
    hog = subprocess.Popen(
        [*PYTHON, "-c", _HOG, str(client_cpu), str(TIMEOUT)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert hog.stdout is not None
        ready, _, _ = select.select([hog.stdout], [], [], 10.0)
        assert ready and hog.stdout.readline() == "spinning\n"
        config = ServerConfig(kind_named("asyncio-protocol"))
        with ServerProcess(config, cpu=server_cpu) as server:
            run = closed_loop(
                server,
                repeat=0,
                size=64,
                # One connection keeps the client mostly waiting, which is
                # when the old measurement went furthest below zero.
                connections=1,
                warmup=0.2,
                duration=0.5,
                client_cpu=client_cpu,
            )
    finally:
        hog.kill()
        hog.wait(10.0)
        if hog.stdout is not None:
            hog.stdout.close()
    assert 0.0 <= run.client_cpu <= 1.0, run
    # The spinning client had about half its core: that is seen, and the
    # row is marked rather than presented as a clean measurement.
    assert run.client_preempted is not None and run.client_preempted > 0.2, run
    report = Report(servers=[config], settings={}, machine={}, malloc_env={})
    report.runs.append(run)
    (row,) = report.rows()
    assert 0.0 <= row.client_busy <= 1.0
    assert "client's core shared" in row.noise


def _run(
    server: str,
    repeat: int,
    rate: float,
    busy: float,
    preempted: float | None = 0.0,
    size: int = 1024,
    pipeline: int = 1,
) -> RunResult:
    elapsed = 1.0
    return RunResult(
        server=server,
        repeat=repeat,
        connections=10,
        size=size,
        loop="uvloop",
        round_trips=int(rate * elapsed),
        elapsed=elapsed,
        p50_us=100.0,
        p99_us=200.0,
        client_cpu=busy,
        server_cpu=0.9,
        sent_bytes=size * int(rate),
        verified_bytes=size * int(rate),
        client_preempted=preempted,
        pipeline=pipeline,
    )


def _noisy_report() -> Report:
    names = [
        "asyncio-protocol",
        "asyncio-streams",
        "tornado-naive",
        "stream",
        "stream-public-api",
        "compat",
    ]
    report = Report(
        servers=[ServerConfig(kind_named(name)) for name in names],
        settings={"repeat": 2},
        machine={},
        malloc_env={},
    )
    for repeat in range(2):
        report.runs += [
            _run("asyncio-protocol", repeat, 90_000, 0.5 + repeat / 100),
            # As measured before the fix: wall-clock idle less CPU time.
            _run("stream", repeat, 70_000, (-0.21, 0.02)[repeat]),
            # Over a full core, and client-bound either way.
            _run("compat", repeat, 88_000, (0.95, 1.2)[repeat]),
            # Something else had the client's core in one repeat.
            _run("stream-public-api", repeat, 45_000, 0.5, (0.3, 0.0)[repeat]),
            # The repeats tell two different stories about the client...
            _run("tornado-naive", repeat, 40_000, (0.2, 0.7)[repeat]),
            # ... or about the server, against the same reference.
            _run("asyncio-streams", repeat, (40_000, 80_000)[repeat], 0.6),
        ]
    return report


def test_report_clamps_client_busy_and_marks_rows_whose_repeats_are_noisy() -> None:
    rows = {row.server: row for row in _noisy_report().rows()}
    clean = rows["asyncio-protocol"]
    assert clean.noise == () and not clean.noisy and not clean.client_bound
    stream = rows["stream"]
    assert stream.client_busy == pytest.approx(0.01)  # the median of 0 and 0.02
    assert stream.client_busy_max == pytest.approx(0.02)
    assert stream.noise == ("busy share out of range",)
    compat = rows["compat"]
    assert compat.client_busy == pytest.approx(0.975)  # of 0.95 and 1.0
    assert compat.client_busy_max == 1.0
    assert compat.client_bound and compat.noise == ("busy share out of range",)
    assert rows["stream-public-api"].noise == ("client's core shared",)
    assert rows["tornado-naive"].noise == ("repeats disagree",)
    assert rows["asyncio-streams"].noise == ("repeats disagree",)
    for row in rows.values():
        assert 0.0 <= row.client_busy <= row.client_busy_max <= 1.0, row


def test_noisy_rows_are_marked_in_every_output() -> None:
    report = _noisy_report()
    markdown = report.to_markdown()
    assert "| 1% | noisy: busy share out of range |" in markdown
    assert "| 98% | client-bound¹; noisy: busy share out of range |" in markdown
    assert "| noisy: client's core shared |" in markdown
    assert "noisy: do not read much into this row as it stands." in markdown
    assert "-21%" not in markdown
    text = report.to_text()
    assert "client-bound; noisy: busy share out of range" in text
    assert "noisy: repeats disagree" in text
    # Through json, as results.json has it.
    data = json.loads(json.dumps(report.to_json()))
    summary = {row["server"]: row for row in data["summary"]}
    assert summary["stream"]["noisy"] is True
    assert summary["stream"]["noise"] == ["busy share out of range"]
    assert summary["asyncio-protocol"]["noisy"] is False
    # The raw runs keep what was measured.
    assert -0.21 in [run["client_cpu"] for run in data["runs"]]


def test_results_written_before_client_preempted_load_without_noise() -> None:
    data = {
        **_run("stream", 0, 70_000, 0.5).to_json(),
        "server": "stream",
        "repeat": 0,
    }
    del data["client_preempted"]
    run = RunResult(**result_fields(RunResult, data))
    assert run.client_preempted is None
    with pytest.raises(KeyError, match="client_cpu"):
        result_fields(RunResult, {k: v for k, v in data.items() if k != "client_cpu"})


def test_bench_doctests_pass() -> None:
    for module in (cli, client, report_module, servers):
        assert doctest.testmod(module).failed == 0, module.__name__


# --- the chart: ours and peers told apart, client-bound bars marked ---------


def _chart_report() -> Report:
    names = ["asyncio-protocol", "asyncio-streams", "stream", "compat"]
    configs = [ServerConfig(kind_named(name)) for name in names]
    configs.append(ServerConfig(kind_named("stream"), "uvloop"))
    report = Report(servers=configs, settings={"repeat": 2}, machine={}, malloc_env={})
    for repeat in range(2):
        for size in (64, 1024):
            report.runs += [
                _run("asyncio-protocol", repeat, 90_000, 0.6, size=size),
                _run("asyncio-streams", repeat, 60_000, 0.5, size=size),
                _run("stream", repeat, 70_000, 0.6, size=size),
                # Client-bound at 1 KiB only.
                _run(
                    "compat", repeat, 88_000, 0.95 if size == 1024 else 0.6, size=size
                ),
                _run("stream (uvloop)", repeat, 80_000, 0.7, size=size),
            ]
    return report


def test_chart_tells_ours_from_peers_and_marks_client_bound_bars() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.colors import same_color

    report = _chart_report()
    drawn = chart._draw(report, 10)
    ours, peers, marks = drawn.legends
    assert ours.get_title().get_text() == "tornado_echo"
    assert [t.get_text() for t in ours.get_texts()] == ["stream", "compat"]
    assert peers.get_title().get_text() == "peers"
    assert [t.get_text() for t in peers.get_texts()] == [
        "asyncio-protocol",
        "asyncio-streams",
    ]
    # Each legend entry has the colour of its kind's bars, on either loop;
    # no colour of ours is a peer's.
    for legend in (ours, peers):
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            for (_, name), bar in drawn.bars.items():
                if name.split(" (")[0] == text.get_text():
                    assert same_color(bar.get_facecolor(), handle.get_facecolor())
    our_colours = {drawn.bars[(64, n)].get_facecolor() for n in ("stream", "compat")}
    peer_colours = {
        drawn.bars[(64, n)].get_facecolor()
        for n in ("asyncio-protocol", "asyncio-streams")
    }
    assert not our_colours & peer_colours
    # Peers on the left of each group, ours on the right.
    for size in (64, 1024):
        x = {name: bar.get_x() for (s, name), bar in drawn.bars.items() if s == size}
        assert max(x["asyncio-protocol"], x["asyncio-streams"]) < min(
            x["stream"], x["compat"], x["stream (uvloop)"]
        )
    assert drawn.bars[(64, "stream (uvloop)")].get_hatch() == "//"
    assert drawn.bars[(64, "stream")].get_hatch() is None
    # One marker, at the foot of the one client-bound bar, and its entry.
    assert set(drawn.client_bound) == {(1024, "compat")}
    bar = drawn.bars[(1024, "compat")]
    ((x, y),) = drawn.client_bound[(1024, "compat")].get_xydata()
    assert x == pytest.approx(bar.get_x() + bar.get_width() / 2)
    assert 0 < y < bar.get_height()
    labels = [t.get_text() for t in marks.get_texts()]
    assert "client-bound: a floor, not a ceiling" in labels
    assert "hatched: on uvloop" in labels


def test_chart_without_client_bound_rows_has_no_client_bound_entry(
    tmp_path: Path,
) -> None:
    pytest.importorskip("matplotlib")
    report = _chart_report()
    report.runs = [run for run in report.runs if run.client_cpu < 0.9]
    drawn = chart._draw(report, 10)
    assert drawn.client_bound == {}
    labels = [t.get_text() for t in drawn.legends[-1].get_texts()]
    assert not any("client-bound" in label for label in labels)
    path = tmp_path / "chart.png"
    assert chart.write_chart(report, path, 10)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_redraw_writes_the_tables_and_chart_again_without_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _noisy_report()
    report.settings["connections"] = [10]
    source = tmp_path / "results.json"
    source.write_text(json.dumps(report.to_json()), encoding="utf-8")
    again = Report.from_json(json.loads(source.read_text(encoding="utf-8")))
    assert again.to_json() == report.to_json()
    out = tmp_path / "out"
    assert main(["--redraw", str(source), "--out", str(out)]) == 0
    assert (out / "results.md").read_text() == report.to_markdown()
    assert not (out / "results.json").exists()
    assert (out / "chart.png").exists() == HAVE_MATPLOTLIB
    assert "bench: measured nothing; wrote results.md" in capsys.readouterr().err


def test_redraw_reads_results_written_before_the_pressure_workloads() -> None:
    # A full run's results.json as the bench wrote it before the pressure
    # workloads and client_preempted existed.
    saved = Path(__file__).resolve().parent / "data/results-before-pressure.json"
    report = Report.from_json(json.loads(saved.read_text(encoding="utf-8")))
    assert report.runs and report.rows() and not report.bulk
    assert all(run.client_preempted is None for run in report.runs)


def test_redraw_of_something_else_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "results.json"
    source.write_text('{"servers": []}', encoding="utf-8")
    with pytest.raises(SystemExit) as raised:
        main(["--redraw", str(source), "--out", str(tmp_path)])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert f"--redraw {source}: not the results.json of a benchmark run" in err


# --- line protocols: the peers, skipping one that is missing, the table -----

#: Every line peer installed here, on each loop a default run measures it
#: on, and our LineServer, which the peers' end-of-input behaviour matches.
_TAIL_SERVERS = sorted(INSTALLED_PEERS | {"lineserver"})
if HAVE_UVLOOP:
    _TAIL_SERVERS += ["asyncio-readline (uvloop)"]


@pytest.mark.parametrize("name", _TAIL_SERVERS)
def test_a_line_peer_echoes_the_unterminated_tail_at_half_close_then_closes(
    name: str,
) -> None:
    kind, _, loop = name.partition(" (")
    config = ServerConfig(kind_named(kind), "uvloop" if loop else "asyncio")
    sent = b"one\ntwo\n" + b"x" * 1000 + b"\nunterminated tail"
    with ServerProcess(config) as server:
        assert server.port is not None
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(sent)
            sock.shutdown(socket.SHUT_WR)
            got = bytearray()
            while chunk := sock.recv(65536):  # b"": the server closed
                got += chunk
    assert bytes(got) == sent
    assert server.returncode() == 0


def test_a_peer_whose_framework_is_missing_is_skipped_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = ServerKind(
        "missing-peer",
        ("tornado_echo.bench.line_peers", "asyncio-readline", "--port", "0"),
        lines=True,
        ours=False,
        uvloop_by_default=True,
        requires=("tornado_echo_no_such_module",),
    )
    reason = (
        "tornado_echo_no_such_module is not installed "
        "(pip install 'tornado_echo[bench]')"
    )
    assert unavailable(missing) == reason

    def with_missing(*args: Any, **kwargs: Any) -> tuple[ServerConfig, ...]:
        # Selected on both loops, for the closed loop and for pressure.
        extra = (ServerConfig(missing), ServerConfig(missing, "uvloop"))
        return (*select_configs(*args, **kwargs), *extra)

    monkeypatch.setattr(cli, "select_configs", with_missing)
    status = main(
        [
            "--smoke", "--servers", "asyncio-protocol", "--loops", "asyncio",
            "--sizes", "64",
            "--idle", "0", "--pressure", "none", "--warmup", "0",
            "--duration", "0.1", "--out", str(tmp_path),
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 0, err
    mentions = [line for line in err.splitlines() if "missing-peer" in line]
    assert mentions == [f"bench: skipping missing-peer: {reason}"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["complete"] is True
    assert [s["name"] for s in results["servers"]] == ["asyncio-protocol"]
    assert f"skipping missing-peer: {reason}" in results["notes"]


def test_every_peer_says_which_modules_it_needs() -> None:
    needs = {kind.name: kind.requires for kind in KINDS if not kind.ours}
    assert needs["twisted-linereceiver"] == ("twisted",)
    assert needs["anyio-trio"] == ("anyio", "trio")
    assert needs["gevent"] == ("gevent",)
    assert needs["asyncio-readline"] == needs["asyncio-protocol"] == ()
    for kind in KINDS:
        found = all(importlib.util.find_spec(name) for name in kind.requires)
        assert (unavailable(kind) is None) == found, kind.name


def _line_report() -> Report:
    names: list[tuple[str, LoopName]] = [
        ("asyncio-protocol", "asyncio"),
        ("asyncio-readline", "asyncio"),
        ("twisted-linereceiver", "asyncio"),
        ("stream --lines", "asyncio"),
        ("asyncio-readline", "uvloop"),
        ("lineserver", "uvloop"),
    ]
    report = Report(
        servers=[ServerConfig(kind_named(kind), loop) for kind, loop in names],
        settings={"repeat": 2},
        machine={},
        malloc_env={},
    )
    # Round trips/s at 64 B lines, and at 16 of them per write. Ratios are
    # taken within a repeat, however slow the second one was.
    rates = {
        "asyncio-protocol": (90_000, 30_000),
        "asyncio-readline": (30_000, 2_000),
        "twisted-linereceiver": (15_000, 4_000),
        "stream --lines": (45_000, 5_000),
        "asyncio-readline (uvloop)": (40_000, 3_000),
        "lineserver (uvloop)": (60_000, 6_000),
    }
    for repeat, scale in enumerate((1.0, 2.0)):
        for server, (single, pipelined) in rates.items():
            report.runs += [
                _run(server, repeat, single * scale, 0.6, size=64),
                _run(
                    server, repeat, pipelined * scale, 0.6,
                    size=64 * PIPELINE, pipeline=PIPELINE,
                ),
            ]  # fmt: skip
    return report


def test_line_table_compares_with_asyncio_readline_on_the_same_loop() -> None:
    report = _line_report()
    rows = {(line.row.server, line.row.pipeline): line for line in report.line_rows()}
    assert {server for server, _ in rows} == {
        "asyncio-readline",
        "twisted-linereceiver",
        "stream --lines",
        "asyncio-readline (uvloop)",
        "lineserver (uvloop)",
    }
    stream = rows[("stream --lines", 1)]
    assert stream.yardstick == "asyncio-readline"
    assert stream.yardstick_ratio == pytest.approx(1.5)
    assert stream.yardstick_ratios == pytest.approx((1.5, 1.5))
    assert stream.row.ratio == pytest.approx(0.5)
    assert rows[("lineserver (uvloop)", 1)].yardstick == "asyncio-readline (uvloop)"
    assert rows[("lineserver (uvloop)", 1)].yardstick_ratio == pytest.approx(1.5)
    assert rows[("twisted-linereceiver", 1)].yardstick_ratio == pytest.approx(0.5)
    piped = rows[("stream --lines", PIPELINE)]
    assert piped.yardstick_ratio == pytest.approx(2.5)
    assert piped.row.rate == pytest.approx(7_500)  # the median of 5,000 and 10,000
    assert piped.row.lines_per_s == pytest.approx(7_500 * PIPELINE)
    # 0.9 s of CPU over 5,000 and 10,000 round trips of 16 lines each.
    assert piped.row.server_cpu_per_line_us == pytest.approx(135 / PIPELINE)
    markdown = report.to_markdown()
    assert "## Line protocols" in markdown
    assert "### 64 B lines × 10 connections" in markdown
    assert "### 16 × 64 B lines per write × 10 connections" in markdown
    assert "| 0.50× | 1.50× | **stream --lines** | 67,500 | 200 | 15.0 | 60% |" in (
        markdown
    )
    assert (
        "| 0.17× | 2.50× | **stream --lines** | 120,000 | 7,500 | 200 | 8.4 | 60% |"
        in markdown
    )
    assert "| 0.67× | 1.50× | **lineserver (uvloop)** | 90,000 |" in markdown
    # The pipelined point is not among the round-trip tables.
    assert "## 1 KiB × 10 connections" not in markdown
    assert "## 64 B × 10 connections" in markdown
    text = report.to_text()
    assert "line protocols: × asyncio-protocol, × asyncio-readline" in text
    assert "16 × 64 B lines per write × 10 connections" in text
    data = json.loads(json.dumps(report.to_json()))
    summary = {
        (row["server"], row["pipeline"]): row for row in data["lines"]["summary"]
    }
    assert summary[("twisted-linereceiver", 1)]["yardstick"] == "asyncio-readline"
    assert summary[("stream --lines", PIPELINE)]["lines_per_s"] == 120_000
    again = Report.from_json(data)
    assert again.line_rows() == report.line_rows()


def test_line_chart_tells_ours_from_peers_at_every_line_point(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = _line_report()
    drawn = chart._draw_lines(report)
    ours, peers, marks = drawn.legends
    assert [t.get_text() for t in ours.get_texts()] == ["stream --lines", "lineserver"]
    assert [t.get_text() for t in peers.get_texts()] == [
        "asyncio-readline",
        "twisted-linereceiver",
    ]
    assert "hatched: on uvloop" in [t.get_text() for t in marks.get_texts()]
    (axes,) = drawn.figure.axes
    assert [t.get_text() for t in axes.get_xticklabels()] == [
        "64 B\n× 10",
        "16 × 64 B lines per write\n× 10",
    ]
    points = [(64, 10, 1), (64 * PIPELINE, 10, PIPELINE)]
    line_servers = {config.name for config in report.servers[1:]}
    assert set(drawn.bars) == {(p, name) for p in points for name in line_servers}
    for point in points:
        x = {name: bar.get_x() for (p, name), bar in drawn.bars.items() if p == point}
        # Peers on the left of each group, ours on the right.
        assert max(x["asyncio-readline"], x["twisted-linereceiver"]) < min(
            x["stream --lines"], x["lineserver (uvloop)"]
        )
    assert drawn.bars[(points[0], "lineserver (uvloop)")].get_hatch() == "//"
    assert drawn.bars[(points[0], "stream --lines")].get_height() == pytest.approx(0.5)
    path = tmp_path / "chart-lines.png"
    assert chart.write_line_chart(report, path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # The byte chart leaves line servers to this one, and with only the
    # reference left it is not drawn.
    assert {row.server for row in chart._rows(report, 10)} == {"asyncio-protocol"}
    assert not chart.write_chart(report, tmp_path / "chart.png", 10)


# --- the CLI reference: quoted server names stay whole -----------------------


def _argparse_options() -> Any:
    pytest.importorskip("sphinx")
    docs_ext = Path(__file__).resolve().parent.parent / "docs" / "_ext"
    sys.path.insert(0, str(docs_ext))
    try:
        return importlib.import_module("argparse_options")
    finally:
        sys.path.remove(str(docs_ext))


@pytest.mark.parametrize("name", cli._KNOWN)
def test_docs_show_a_quoted_server_name_whole_and_link_no_option_inside_it(
    name: str,
) -> None:
    options = _argparse_options()  # skips without Sphinx, and so docutils
    from docutils import nodes
    from docutils.core import publish_doctree

    rst = options._help_to_rst(
        f"e.g. '{name}' or \"{name},stream\"; see --servers", {"--servers", "--lines"}
    )
    assert f"``'{name}'``" in rst and f'``"{name},stream"``' in rst
    assert rst.count(":option:") == 1 and rst.endswith(r"\ :option:`--servers`\ ")
    # Valid reST, whose literals are the quoted names exactly as typed
    # (the option role is Sphinx's, so left out of this docutils parse).
    tree = publish_doctree(rst.replace(":option:", ""))
    literals = [node.astext() for node in tree.findall(nodes.literal)]
    assert literals[:2] == [f"'{name}'", f'"{name},stream"']


def test_docs_keep_apostrophes_as_text_and_still_link_options() -> None:
    rst = _argparse_options()._help_to_rst(
        "on asyncio's loop unless --servers or the client's --loops say otherwise",
        {"--servers", "--loops"},
    )
    assert rst == (
        r"on asyncio's loop unless \ :option:`--servers`\  or the client's "
        r"\ :option:`--loops`\  say otherwise"
    )


def test_the_readme_describes_smoke_as_its_help_does() -> None:
    smoke = next(
        a for a in cli.build_parser()._actions if "--smoke" in a.option_strings
    )
    summary = (smoke.help or "").split(":", 1)[0]  # "a few seconds per server, for CI"
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    said = [line for line in readme.split("\n\n") if "bench --smoke`" in line]
    assert said, "the README no longer says what CI's smoke run is"
    for paragraph in said:
        assert summary.split(",")[0] in " ".join(paragraph.split()), paragraph
