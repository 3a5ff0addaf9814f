"""Smoke tests of ``python -m tornado_echo.bench``, the benchmark tool.

They run the tool as a subprocess with tiny sizes and check that it works:
that every implementation and workload produced a result and that the data
it measured was verified. They never assert on speed: numbers from a shared
test machine mean nothing, and benchmarks do not belong in timed tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tornado_echo import bench

#: Generous next to the ~1 s these runs take, so a hung tool fails the test
#: instead of hanging the suite.
TIMEOUT = 60.0

#: The interpreter for the tool; deprecated APIs are errors, as in test_cli.
PYTHON = (sys.executable, "-W", "error::DeprecationWarning")


def run_bench(*args: str) -> tuple[int, dict[str, Any], str]:
    """Run the tool with ``--json``; returns its status, output and stderr."""
    proc = subprocess.run(
        [*PYTHON, "-m", "tornado_echo.bench", "--json", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,  # the status is part of what the tests check
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON on stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc.returncode, report, proc.stderr


def test_every_impl_and_workload_reports_a_verified_positive_result() -> None:
    status, report, stderr = run_bench(
        "--impl", "both", "--repeat", "1",
        "--total-mib", "1", "--round-trips", "200", "--line-count", "1000",
    )  # fmt: skip
    assert status == 0, stderr
    assert report["complete"] is True
    assert report["stopped"] is None
    results = {(r["impl"], r["workload"], r["metric"]): r for r in report["results"]}
    expected = {
        ("stream", "throughput", "throughput"): {"bytes": 1024 * 1024, "clients": 4},
        ("stream", "pingpong", "round_trips"): {"round_trips": 200, "bytes": 200 * 64},
        ("stream", "pingpong", "p50"): {"round_trips": 200, "bytes": 200 * 64},
        ("stream", "pingpong", "p99"): {"round_trips": 200, "bytes": 200 * 64},
        ("stream", "lines", "lines"): {"lines": 1000, "bytes": 1000 * 40},
        ("compat", "throughput", "throughput"): {"bytes": 1024 * 1024, "clients": 4},
        ("compat", "pingpong", "round_trips"): {"round_trips": 200, "bytes": 200 * 64},
        ("compat", "pingpong", "p50"): {"round_trips": 200, "bytes": 200 * 64},
        ("compat", "pingpong", "p99"): {"round_trips": 200, "bytes": 200 * 64},
    }
    # No compat lines: --lines runs on the stream implementation only.
    assert sorted(results) == sorted(expected)
    for key, verified in expected.items():
        result = results[key]
        assert len(result["runs"]) == 1, key
        assert result["best"] > 0, key
        assert result["median"] > 0, key
        assert result["verified"] == verified, key
    for impl in ("stream", "compat"):
        p50 = results[(impl, "pingpong", "p50")]["best"]
        assert results[(impl, "pingpong", "p99")]["best"] >= p50


def test_time_limit_stops_the_benchmark_and_says_so() -> None:
    status, report, stderr = run_bench(
        "--impl", "stream", "--workload", "pingpong",
        "--round-trips", "10000000", "--time-limit", "1",
    )  # fmt: skip
    assert status == 1
    assert report["complete"] is False
    assert "time limit of 1 s" in report["stopped"]
    assert report["results"] == []  # not one of the long runs finished
    assert "stopped early: the time limit" in stderr


def test_lines_workload_without_the_stream_impl_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as raised:
        bench.main(["--impl", "compat", "--workload", "lines"])
    assert raised.value.code == 2
    assert "the lines workload needs --impl stream" in capsys.readouterr().err
