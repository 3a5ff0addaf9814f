"""``python -m tornado_echo.bench.kv``: examples/kv_server.py against memcached.

A ``--smoke`` run against a real memcached and the real example must
complete with every reply verified; a server that answers one request
wrongly must fail the run with one line saying what differed, both in the
load client and through the whole benchmark. The tests never assert on
speed: numbers from a shared test machine mean nothing.
"""

from __future__ import annotations

import doctest
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import _proc
import pytest
from conftest import EXAMPLES

from tornado_echo.bench import kv, kv_client
from tornado_echo.bench.kv import KVRun, main, summarize
from tornado_echo.bench.kv_client import KVClientResult

#: Generous next to the few seconds a smoke run takes, so a hung benchmark
#: fails the test instead of hanging the suite.
TIMEOUT = 60.0

KV_SERVER = EXAMPLES / "kv_server.py"

HOST = "127.0.0.1"

needs_memcached = _proc.needs_tool("memcached", "memcached")


def run_kv(*args: str) -> subprocess.CompletedProcess[str]:
    """The benchmark as a subprocess, always on this checkout's example."""
    return _proc.run(
        [*_proc.PYTHON, "-m", "tornado_echo.bench.kv", *args], timeout=TIMEOUT
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One ``--smoke`` run for the module: its kv.json, and its directory."""
    out = tmp_path_factory.mktemp("kv")
    proc = run_kv("--smoke", "--kv-server", str(KV_SERVER), "--out", str(out))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert kv.SKIP_MESSAGE not in proc.stderr, "memcached must be installed here"
    return json.loads((out / "kv.json").read_text()), out


@needs_memcached
def test_smoke_run_verifies_every_reply_of_memcached_and_kv_server(
    smoke: tuple[dict[str, Any], Path],
) -> None:
    results, _ = smoke
    assert results["complete"] is True and results["failure"] is None
    runs = results["runs"]
    assert [(run["server"], run["repeat"]) for run in runs] == [
        ("memcached", 0),
        ("kv_server", 0),
    ]
    for run in runs:
        name = run["server"]
        # Every key was stored, and checked, before the measured window.
        assert run["sent"] > run["keys"] == 1000, name
        assert run["verified"] == run["sent"], name
        assert run["requests"] == run["gets"] + run["sets"], name
        assert run["gets"] > 0 and run["sets"] > 0, name
        assert run["rate"] > 0, name
        assert run["server_cpu_per_request_us"] > 0, name
        assert run["connections"] == 10, name
    for name, server in results["servers"].items():
        assert server["exit_status"] == 0, name
    assert results["servers"]["memcached"]["argv"][1:5] == ["-t", "1", "-l", HOST]


@needs_memcached
def test_smoke_run_reports_kv_servers_ratio_to_memcached(
    smoke: tuple[dict[str, Any], Path],
) -> None:
    results, out = smoke
    rows = {row["server"]: row for row in results["summary"]}
    assert rows["memcached"]["ratio"] == 1.0
    assert rows["kv_server"]["ratio"] > 0
    assert rows["kv_server"]["cpu_per_request_us"] > 0
    for row in rows.values():
        assert 0.0 <= row["client_busy"] <= row["client_busy_max"] <= 1.0
    markdown = (out / "kv.md").read_text()
    assert "| × memcached | CPU/req × | server | requests/s |" in markdown
    assert "| 1.00× | 1.00× | memcached |" in markdown
    assert re.search(
        r"^\| [\d.]+× \| [\d.]+× \| \*\*kv_server\*\* \|", markdown, re.MULTILINE
    )
    assert "memcached 1." in markdown  # the version measured


# --- servers that answer wrongly ---------------------------------------------

_WRONG_SERVER = '''
    """A memcached impostor that takes every set and answers {wrong!r}."""
    import asyncio
    import sys


    async def serve(reader, writer):
        while line := await reader.readline():
            words = line.split()
            if words[:1] == [b"set"]:
                await reader.readexactly(int(words[4]) + 2)
                writer.write({set_reply!r})
            else:
                writer.write({get_reply!r})
        writer.close()


    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print(f"listening on 127.0.0.1:{{port}}", file=sys.stderr, flush=True)
        await server.serve_forever()


    asyncio.run(main())
'''

#: Each impostor, and the start of the line its first wrong reply gives.
WRONG = {
    # Forgets what it stored: a get of a key that was set finds nothing.
    "forgets": (
        b"STORED\r\n",
        b"END\r\n",
        (
            r"the reply to 'get k\d+' differed: expected b'VALUE k\d+ \d+ \d+\\r\\n"
            r"k\d+\.\d+\.\d+\.\w*\\r\\nEND\\r\\n', got b'END\\r\\n'"
        ),
    ),
    # Refuses every set, starting with the first key stored.
    "refuses": (
        b"NOT_STORED\r\n",
        b"END\r\n",
        (
            r"the reply to 'set k\d+ 0 0 \d+' differed: expected b'STORED\\r\\n', "
            r"got b'NOT_STORED\\r\\n'"
        ),
    ),
}


def wrong_server(tmp_path: Path, how: str) -> Path:
    set_reply, get_reply, _ = WRONG[how]
    script = tmp_path / f"{how}.py"
    source = _WRONG_SERVER.format(
        wrong=set_reply if how == "refuses" else get_reply,
        set_reply=set_reply,
        get_reply=get_reply,
    )
    script.write_text(textwrap.dedent(source))
    return script


@pytest.mark.parametrize("how", sorted(WRONG))
def test_the_load_client_fails_on_the_first_wrong_reply_saying_what_differed(
    tmp_path: Path, how: str
) -> None:
    script = wrong_server(tmp_path, how)
    with _proc.running_server([*_proc.PYTHON, str(script)]) as (_, port):
        client = [*_proc.PYTHON, "-m", "tornado_echo.bench.kv_client"]
        options = ["--connections", "2", "--keys", "10", "--duration", "0.2"]
        proc = _proc.run([*client, "--port", str(port), "--warmup", "0", *options])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    error = json.loads(lines[0])["error"]
    assert re.fullmatch(WRONG[how][2], error), error


@needs_memcached
def test_a_kv_server_that_forgets_a_set_fails_the_benchmark_in_one_line(
    tmp_path: Path,
) -> None:
    script = wrong_server(tmp_path, "forgets")
    out = tmp_path / "out"
    proc = run_kv("--smoke", "--kv-server", str(script), "--out", str(out))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""  # no table for a run that failed
    # memcached ran first and answered right; then one line says why not.
    lines = proc.stderr.splitlines()
    assert any(line.startswith("bench kv: memcached, repeat 1/1: ") for line in lines)
    about_kv_server = [line for line in lines if "kv_server" in line]
    assert about_kv_server == lines[-1:], lines
    failure = lines[-1].removeprefix("bench kv: ")
    assert re.fullmatch("kv_server, repeat 1: " + WRONG["forgets"][2], failure)
    results = json.loads((out / "kv.json").read_text())
    assert results["complete"] is False
    assert results["failure"] == failure
    assert not (out / "kv.md").exists()


# --- the command line ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--set-ratio", "1.5"], "argument --set-ratio: must be 0 to 1, not 1.5"),
        (["--set-ratio", "most"], "argument --set-ratio: not a number: 'most'"),
        (["--connections", "0"], "argument --connections: must be at least 1, not 0"),
        (["--repeat", "two"], "argument --repeat: not a whole number: 'two'"),
        (["--duration", "0"], "argument --duration: must be more than 0"),
        (
            ["--keys", "5"],
            (
                "--keys (5) must be at least --connections (10): each connection "
                "owns its keys"
            ),
        ),
        (
            ["--kv-server", "/nonexistent/kv_server.py"],
            "argument --kv-server: no such file: /nonexistent/kv_server.py",
        ),
    ],
)
def test_bad_options_are_one_line_usage_errors(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--kv-server", str(KV_SERVER), *args])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m tornado_echo.bench.kv ")
    assert err.splitlines()[-1] == f"python -m tornado_echo.bench.kv: error: {error}"


def test_without_memcached_it_says_so_in_one_line_and_measures_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory
    out = tmp_path / "out"
    assert main(["--smoke", "--kv-server", str(KV_SERVER), "--out", str(out)]) == 0
    assert capsys.readouterr() == ("", kv.SKIP_MESSAGE + "\n")
    assert kv.SKIP_MESSAGE == (
        "bench kv: memcached is not installed (apt-get install memcached); skipping"
    )
    assert not out.exists()


# --- the report ----------------------------------------------------------------


def result(rate: float, cpu_us: float, preempted: float = 0.0) -> KVClientResult:
    """A one-second run of ``rate`` requests, ``cpu_us`` of server CPU each."""
    requests = int(rate)
    return KVClientResult(
        connections=10,
        keys=1000,
        set_ratio=0.1,
        loop="uvloop",
        requests=requests,
        gets=requests - requests // 10,
        sets=requests // 10,
        elapsed=1.0,
        p50_us=100.0,
        p99_us=300.0,
        client_busy=1.2,  # out of range: the report clamps it
        client_preempted=preempted,
        server_cpu=requests * cpu_us / 1e6,
        sent=requests + 1000,
        verified=requests + 1000,
    )


def test_each_ratio_is_taken_within_its_repeat_and_medians_reported() -> None:
    runs = [
        KVRun("memcached", 0, result(100_000, 10.0)),
        KVRun("kv_server", 0, result(50_000, 40.0)),
        KVRun("kv_server", 1, result(50_000, 40.0)),
        KVRun("memcached", 1, result(200_000, 8.0)),
    ]
    memcached, kv_server = summarize(runs)
    assert (memcached.server, memcached.ratio, memcached.cpu_ratio) == (
        "memcached",
        1.0,
        1.0,
    )
    assert kv_server.server == "kv_server"
    # (0.5 + 0.25) / 2, not 50,000 / 150,000: each repeat against its own.
    assert kv_server.ratio == pytest.approx(0.375)
    assert kv_server.cpu_ratio == pytest.approx((10 / 40 + 8 / 40) / 2)
    assert kv_server.rate == 50_000
    assert kv_server.cpu_per_request_us == pytest.approx(40.0)
    assert kv_server.client_busy == kv_server.client_busy_max == 1.0  # clamped
    assert kv_server.client_bound
    # Ratios 2 times apart: the repeats disagree; so do memcached's rates.
    assert kv_server.noise == memcached.noise == ("repeats disagree",)


def test_a_repeat_whose_client_was_not_running_marks_its_row_noisy() -> None:
    runs = [
        KVRun("memcached", 0, result(100_000, 10.0)),
        KVRun("kv_server", 0, result(30_000, 40.0, preempted=0.3)),
    ]
    memcached, kv_server = summarize(runs)
    assert memcached.noise == ()
    assert kv_server.noise == ("client's core shared",)
    markdown = kv.to_markdown(
        [memcached, kv_server],
        kv.Settings(),
        {"machine": {"python": "3.11.7"}, "pinning": "servers on CPU 0"},
    )
    assert "| **kv_server** | 30,000 | 40.0 |" in markdown
    assert "client-bound¹; noisy²: client's core shared |" in markdown
    assert "\n² noisy: " in markdown and "\n¹ client-bound: " in markdown


def test_kv_bench_doctests_pass() -> None:
    for module in (kv, kv_client):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_it_runs_as_a_script() -> None:
    # -h parses nothing else and starts nothing.
    proc = _proc.run([sys.executable, "-m", "tornado_echo.bench.kv", "-h"])
    assert proc.returncode == 0, proc.stderr
    assert "--set-ratio SHARE" in proc.stdout
