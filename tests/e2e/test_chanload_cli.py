"""`chanload run`'s command line: errors before traffic, outputs, secrets."""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess

import pytest

from engine.measure.result import CSV_COLUMNS, SEED_COLUMNS
from tests.support import ROOT, chanload_command, run_chanload


def chanload(
    *args: str, timeout: float = 60, env_columns: int | None = None
) -> subprocess.CompletedProcess:
    env = None
    if env_columns is not None:
        env = {**os.environ, "COLUMNS": str(env_columns)}
    return subprocess.run(
        chanload_command(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env
    )


def test_help_lists_scenarios_and_options():
    out = chanload("run", "--help")
    assert out.returncode == 0
    for word in (
        "happy_path",
        "ramp_up",
        "large_payload",
        "large_response",
        "mixed_methods",
        "slow_sink",
        "direct_sink",
        "--channel-url",
        "--concurrency",
        "--payload-size",
        "--response-size",
        "--delay",
        "--csv",
        "--json",
        "--timeout",
        "--parser",
        "--header",
        "--expect-status",
        "--destination",
        "--repoint-channel",
    ):
        assert word in out.stdout, word


def test_help_shows_defaults_written_in_brackets():
    # rich reads "[default: ...]" as a markup tag and drops it unless escaped.
    out = chanload("run", "--help", env_columns=200)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for shown in (
        "[default: lightning@<hostname>]",
        "[default: 1024; large_payload: 1048576]",
        "[default: none; slow_sink: 2000]",
    ):
        assert shown in text, shown


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--concurrency", "0"], "--concurrency"),
        (["--concurrency", "-3"], "--concurrency"),
        (["--concurrency", "many"], "--concurrency"),
        (["--duration", "0"], "--duration"),
        (["--duration", "-1"], "--duration"),
        (["--scenario", "everything"], "happy_path"),
        (["--payload-size", "0"], "--payload-size"),
        (["--response-size", "-1"], "--response-size"),
        (["--delay", "-5"], "--delay"),
        (["--timeout", "0"], "--timeout"),
        (["--parser", "regex"], "h11"),
        (["--sink", "ftp://x"], "--sink"),
        (["--sink", "wss://x"], "--sink"),
        (["--sink", "https://x", "--ca-file", "/nonexistent/ca.pem"], "--ca-file"),
        (["--channel-url", "nothing"], "--channel-url"),
        (["--unknown-flag"], "--unknown-flag"),
    ],
)
def test_invalid_options_exit_2_with_one_line(args, needle):
    out = chanload("run", "--scenario", "direct_sink", *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("chanload: error:")
    assert needle in lines[0]
    assert "Starting load test" not in out.stdout


def test_proxy_scenarios_without_a_channel_url_go_to_lightning(sink):
    """No --channel-url: Lightning mode; with no EPMD to ask, a clear error, exit 1."""
    import os

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    out = subprocess.run(
        chanload_command(
            "run",
            "--scenario",
            "happy_path",
            "--sink",
            sink.url,
            "--node",
            "lightning@localhost",
            "--cookie",
            "x",
        ),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "ERL_EPMD_PORT": str(free)},
    )
    assert out.returncode == 1
    assert "Connecting to lightning@localhost... failed" in out.stdout
    assert "EPMD is not running on localhost" in out.stderr
    assert "Starting load test" not in out.stdout


def test_unreachable_sink_exits_1_with_the_seeds_hint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        out = chanload("run", "--scenario", "direct_sink", "--sink", f"http://127.0.0.1:{port}")
    assert out.returncode == 1
    assert f"could not reach the mock sink at http://127.0.0.1:{port}/" in out.stderr
    assert "Start the mock sink first" in out.stderr
    assert "Starting load test" not in out.stdout


def test_unwritable_outputs_are_refused_before_any_traffic(sink, tmp_path):
    out = chanload(
        "run",
        "--scenario",
        "direct_sink",
        "--sink",
        sink.url,
        "--csv",
        str(tmp_path / "no" / "such" / "dir.csv"),
    )
    assert out.returncode == 2
    assert "--csv" in out.stderr and "does not exist" in out.stderr
    out = chanload("run", "--scenario", "direct_sink", "--sink", sink.url, "--json", str(tmp_path))
    assert out.returncode == 2
    assert "is a directory" in out.stderr
    sink.stop()
    assert sink.summary["requests"] == 0


def test_csv_appends_rows_under_one_header_with_the_seeds_columns_first(sink, tmp_path):
    path = tmp_path / "results.csv"
    for scenario in ("direct_sink", "direct_sink"):
        run = run_chanload(
            tmp_path,
            "--scenario",
            scenario,
            "--sink",
            sink.url,
            "--duration",
            "0.5",
            "--concurrency",
            "2",
            "--quiet",
            "--csv",
            str(path),
        )
        assert run.code == 0, run.stderr
        assert f"Writing CSV to {path}... ok" in run.stdout
    lines = path.read_text().splitlines()
    assert lines[0].split(",")[: len(SEED_COLUMNS)] == list(SEED_COLUMNS)
    assert lines[0].split(",") == list(CSV_COLUMNS)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 2
    for row in rows:
        assert row["scenario"] == "direct_sink"
        assert int(row["total_requests"]) > 0
        assert float(row["rps"]) > 0
        assert row["memory_start_bytes"] == ""  # no memory probe on the direct baseline
        assert int(row["p50_us"]) <= int(row["p99_us"])
        assert row["parser"] == "httptools"


def test_json_keeps_the_csv_names_and_the_whole_run(sink, tmp_path):
    run = run_chanload(
        tmp_path,
        "--scenario",
        "direct_sink",
        "--sink",
        sink.url,
        "--duration",
        "1.2",
        "--concurrency",
        "2",
        "--quiet",
    )
    r = run.result
    for name in (
        "total_requests",
        "rps",
        "error_count",
        "error_rate",
        "p50_us",
        "p95_us",
        "p99_us",
        "min_us",
        "max_us",
        "duration_s",
        "concurrency",
        "scenario",
    ):
        assert name in r
    assert r["histogram"].startswith("HISTF")
    assert len(r["series"]) >= 1
    assert r["environment"]["uvloop"]
    assert r["config"]["scenario"] == "direct_sink"


def test_the_cookie_never_appears_in_any_output(sink, tmp_path):
    secret = "s3cr3t-cookie-value"
    path = tmp_path / "r.csv"
    run = run_chanload(
        tmp_path,
        "--scenario",
        "direct_sink",
        "--sink",
        sink.url,
        "--duration",
        "0.5",
        "--concurrency",
        "1",
        "--cookie",
        secret,
        "--csv",
        str(path),
    )
    assert run.code == 0
    assert "--cookie ***" in run.stdout
    assert secret not in run.stdout + run.stderr
    assert secret not in json.dumps(run.result)
    assert secret not in path.read_text()


def test_unreachable_channel_url_exits_1(sink):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        out = chanload("run", "--channel-url", f"http://127.0.0.1:{port}/channels/x/test")
    assert out.returncode == 1
    assert "could not reach the channel URL" in out.stderr
    assert "Is the proxy running" in out.stderr


def test_progress_line_on_a_terminal(sink):
    """Under a pseudo-terminal the live line appears; piped (other tests) it does not."""
    import os
    import pty
    import select
    import sys

    pid, fd = pty.fork()
    if pid == 0:  # the child: chanload with a terminal for stdout
        os.chdir(ROOT)
        os.execv(
            sys.executable,
            chanload_command(
                "run",
                "--scenario",
                "direct_sink",
                "--sink",
                sink.url,
                "--duration",
                "2.2",
                "--concurrency",
                "2",
            ),
        )
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert "s elapsed," in text and "req/s" in text and "VUs" in text
    assert "\r" in text
    assert " Channel Load Test Results" in text


def test_thresholds_set_the_exit_code(sink, tmp_path):
    common = (
        "--scenario",
        "direct_sink",
        "--sink",
        sink.url,
        "--duration",
        "0.5",
        "--concurrency",
        "2",
        "--quiet",
    )
    ok = run_chanload(tmp_path, *common, "--threshold", "p99<10s", "--threshold", "error_rate<1%")
    assert ok.code == 0, ok.stderr
    assert " Thresholds: all passed" in ok.stdout
    assert "   pass  p99<10s" in ok.stdout
    assert [t["passed"] for t in ok.result["thresholds"]] == [True, True]
    bad = run_chanload(tmp_path, *common, "--threshold", "p50<1us", "--threshold", "rps>1")
    assert bad.code == 3
    assert " Thresholds: 1 FAILED" in bad.stdout
    assert "   FAIL  p50<1us  (actual " in bad.stdout
    assert bad.result is not None  # results are written before the exit
    usage = chanload("run", *common, "--threshold", "p99<5MB")
    assert usage.returncode == 2
    assert "--threshold 'p99<5MB'" in usage.stderr


def test_merge_and_compare_from_the_command_line(sink, tmp_path):
    common = (
        "--scenario",
        "direct_sink",
        "--sink",
        sink.url,
        "--duration",
        "0.5",
        "--concurrency",
        "2",
        "--quiet",
    )
    a = run_chanload(tmp_path, *common)
    b = run_chanload(tmp_path, *common)
    paths = []
    for i, run in enumerate((a, b)):
        path = tmp_path / f"run{i}.json"
        path.write_text(json.dumps(run.result))
        paths.append(str(path))
    merged_path = tmp_path / "merged.json"
    out = chanload("merge", *paths, "-o", str(merged_path))
    assert out.returncode == 0, out.stderr
    merged = json.loads(merged_path.read_text())
    assert merged["total_requests"] == a.result["total_requests"] + b.result["total_requests"]
    assert merged["concurrency"] == 4
    assert len(merged["merged_from"]) == 2
    cmp = chanload("compare", paths[0], str(merged_path))
    assert cmp.returncode == 0, cmp.stderr
    assert "== direct_sink ==" in cmp.stdout
    assert re.search(r"^requests\s", cmp.stdout, re.M)
    assert chanload("compare", paths[0], str(tmp_path / "missing.json")).returncode == 2


def test_hdr_log_from_a_run(sink, tmp_path):
    from hdrh.log import HistogramLogReader

    path = tmp_path / "run.hlog"
    run = run_chanload(
        tmp_path,
        "--scenario",
        "direct_sink",
        "--sink",
        sink.url,
        "--duration",
        "2.2",
        "--concurrency",
        "2",
        "--quiet",
        "--hdr-log",
        str(path),
    )
    assert run.code == 0, run.stderr
    reader = HistogramLogReader(str(path), None)
    total = 0
    while (h := reader.get_next_interval_histogram()) is not None:
        total += h.get_total_count()
    assert total == run.result["responses"]
