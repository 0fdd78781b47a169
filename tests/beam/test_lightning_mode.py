"""`chanload run` in Lightning mode, against the Elixir stand-in run as a real node."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from engine.beam.dist import Node
from engine.beam.terms import Atom
from tests.support import ROOT, chanload_command, run_chanload


def lightning_args(standin, sink, *extra: str) -> tuple[str, ...]:
    return (
        "--node",
        standin.name,
        "--cookie",
        standin.cookie,
        "--target",
        standin.url,
        "--sink",
        sink.url,
        "--quiet",
        *extra,
    )


def leftovers(standin) -> dict:
    async def ask():
        n = await Node.connect(standin.name, standin.cookie)
        try:
            table = await n.rpc("ets", "info", [Atom("chanload_telemetry")])
            handlers = await n.rpc("telemetry", "list_handlers", [[Atom("lightning")]])
            loaded = await n.rpc("code", "is_loaded", [Atom("Elixir.Chanload.TelemetryCollector")])
            owner = await n.rpc("erlang", "whereis", [Atom("chanload_telemetry_owner")])
            return {"table": table, "handlers": handlers, "loaded": loaded, "owner": owner}
        finally:
            await n.close()

    return asyncio.run(ask())


def test_channel_created_once_then_found_with_memory_and_timing(standin, sink, tmp_path):
    first = run_chanload(
        tmp_path,
        "--scenario",
        "happy_path",
        "--duration",
        "2",
        "--concurrency",
        "4",
        *lightning_args(standin, sink),
    )
    assert first.code == 0, first.stderr + first.stdout
    assert "Looking up channel 'load-test'... not found, creating" in first.stdout
    assert "Creating 'load-test' project... ok" in first.stdout
    second_csv = tmp_path / "second.csv"
    second = run_chanload(
        tmp_path,
        "--scenario",
        "large_payload",
        "--duration",
        "2",
        "--concurrency",
        "4",
        "--csv",
        str(second_csv),
        *lightning_args(standin, sink),
    )
    assert second.code == 0, second.stderr
    assert re.search(
        r"Looking up channel 'load-test'\.\.\. found \(id: [0-9a-f]{8}\.\.\.\)", second.stdout
    )
    assert "creating" not in second.stdout
    assert second.result["memory_verdict"].startswith("streaming")
    ids = {r.result["url"].split("/channels/")[1].split("/")[0] for r in (first, second)}
    assert len(ids) == 1  # the same channel both times

    for run in (first, second):
        r = run.result
        assert r["target_kind"] == "lightning"
        assert r["error_count"] == 0 and r["total_requests"] > 50
        mem = r["memory"]
        assert mem["source"] == "Lightning BEAM"
        assert mem["start_bytes"] > 0 and mem["max_bytes"] >= mem["end_bytes"] > 0
        assert mem["delta_bytes"] == mem["end_bytes"] - mem["start_bytes"]
        assert len(mem["samples"]) >= 3  # baseline, during, after
        assert mem["samples"][0][0] == 0.0  # the baseline is taken before the load
        events = r["server_timing"]["events"]
        for key in ("request", "fetch_channel", "upstream"):
            assert events[key]["count"] == r["total_requests"], key
        assert events["request"]["p50_us"] >= events["upstream"]["p50_us"]
        text = run.stdout
        assert "Memory (Lightning BEAM):" in text
        for label in ("start:", "end:", "max:", "delta:"):
            assert label in text
        assert " Channel Proxy Timing (server-side):" in text
        assert re.search(
            rf"Total request\s+p50=\S+, p95=\S+, p99=\S+, n={r['total_requests']}\b", text
        )
        assert "Plug overhead" in text
        assert "Tearing down telemetry collector... ok" in text
    (values,) = list(csv.DictReader(second_csv.open()))
    assert int(values["server_request_count"]) == second.result["total_requests"]
    assert int(values["memory_start_bytes"]) == second.result["memory"]["start_bytes"]

    left = leftovers(standin)
    assert left["table"] == Atom("undefined")
    assert left["handlers"] == []
    assert left["loaded"] is False
    assert left["owner"] == Atom("undefined")


def test_large_payload_through_a_streaming_proxy_is_judged_streaming(standin, sink, tmp_path):
    run = run_chanload(
        tmp_path,
        "--scenario",
        "large_payload",
        "--duration",
        "3",
        "--concurrency",
        "4",
        *lightning_args(standin, sink),
    )
    assert run.code == 0, run.stderr
    r = run.result
    assert r["error_count"] == 0
    assert r["body_bytes_out"] == r["total_requests"] * 1048576
    assert r["memory_verdict"].startswith("streaming")
    assert " Verdict:     streaming" in run.stdout
    assert r["server_timing"]["events"]["request"]["count"] == r["total_requests"]


def chanload(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    out = subprocess.run(
        chanload_command("run", *args), capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    return out, time.monotonic() - started


def test_wrong_cookie_exits_1_quickly_with_a_hint(standin, sink):
    out, elapsed = chanload(
        "--scenario",
        "happy_path",
        "--node",
        standin.name,
        "--cookie",
        "wrong-cookie",
        "--target",
        standin.url,
        "--sink",
        sink.url,
    )
    assert out.returncode == 1
    assert "check the cookie" in out.stderr
    assert "wrong-cookie" not in out.stdout + out.stderr
    assert elapsed < 2 + 1.5  # the failure itself under 2 s, plus start-up


def test_no_such_node_exits_1(standin, sink):
    host = standin.name.split("@")[1]
    out, _ = chanload(
        "--scenario", "happy_path", "--node", f"nobody@{host}", "--cookie", "x", "--sink", sink.url
    )
    assert out.returncode == 1
    assert "no node named 'nobody'" in out.stderr
    assert "--node" in out.stderr  # the hint


def test_epmd_down_exits_1(sink):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    started = time.monotonic()
    out = subprocess.run(
        chanload_command(
            "run", "--node", "lightning@localhost", "--cookie", "x", "--sink", sink.url
        ),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**__import__("os").environ, "ERL_EPMD_PORT": str(free)},
    )
    assert out.returncode == 1
    assert "EPMD is not running" in out.stderr
    assert time.monotonic() - started < 4


def test_the_cookie_never_appears_anywhere(standin, sink, tmp_path):
    csv = tmp_path / "r.csv"
    run = run_chanload(
        tmp_path,
        "--scenario",
        "happy_path",
        "--duration",
        "1",
        "--concurrency",
        "2",
        "--csv",
        str(csv),
        *lightning_args(standin, sink),
    )
    assert run.code == 0, run.stderr
    secret = standin.cookie
    assert secret not in run.stdout + run.stderr
    assert secret not in json.dumps(run.result)
    assert secret not in csv.read_text()
    assert "--cookie ***" in run.stdout


def test_node_killed_mid_run_the_run_still_finishes(standin, sink, tmp_path):
    timer = threading.Timer(1.5, standin.kill)
    timer.start()
    try:
        run = run_chanload(
            tmp_path,
            "--scenario",
            "happy_path",
            "--duration",
            "4",
            "--concurrency",
            "2",
            "--timeout",
            "2",
            *lightning_args(standin, sink),
        )
    finally:
        timer.cancel()
    assert run.code == 0, run.stderr
    r = run.result
    assert r["memory"]["lost_at"] is not None
    assert "sampling lost at" in run.stdout
    assert r["server_timing"] and r["server_timing"]["lost"], run.stdout[-3000:]
    assert r["transport_errors"] > 0  # the proxy died with the node
    assert r["responses"] > 0  # and answered before that
    assert run.elapsed < 4 + 2 + 6


def test_a_node_without_lightning_gives_badrpc_with_the_remote_reason(erl_factory, sink):
    node = erl_factory("otp25")
    out, elapsed = chanload(
        "--scenario",
        "happy_path",
        "--node",
        node.name,
        "--cookie",
        node.cookie,
        "--sink",
        sink.url,
    )
    assert out.returncode == 1
    assert "Elixir.Lightning.Repo.get_by/2 failed on the node" in out.stderr
    assert "undef" in out.stderr
    assert "is this a Lightning node?" in out.stderr
    assert elapsed < 2 + 1.5


def test_suite_against_lightning(standin, sink, tmp_path):
    out = subprocess.run(
        chanload_command(
            "suite",
            "--node",
            standin.name,
            "--cookie",
            standin.cookie,
            "--target",
            standin.url,
            "--sink",
            sink.url,
            "--duration",
            "1",
            "--concurrency",
            "2",
            "--out-dir",
            str(tmp_path),
        ),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr + out.stdout[-3000:]
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    results = doc["results"]
    assert len(results) == 7
    assert results[0]["target_kind"] == "direct"
    for r in results[1:]:
        assert r["target_kind"] == "lightning"
        assert r["memory"]["source"] == "Lightning BEAM"
        assert r["server_timing"]["events"]["request"]["count"] == r["total_requests"]
    assert doc["overhead"]["server_timing"]["source"] == "Lightning telemetry"
    assert "server-side (happy_path): Total request p50=" in out.stdout
    assert standin.cookie not in out.stdout + next(tmp_path.glob("*.log")).read_text()
    assert out.stdout.count("Looking up channel 'load-test'... not found, creating") == 1


def test_saturation_against_lightning_resets_the_collector_per_step(standin, sink, tmp_path):
    run = run_chanload(
        tmp_path,
        "--scenario",
        "saturation",
        "--duration",
        "0.7",
        "--concurrency",
        "5",
        *lightning_args(standin, sink),
    )
    assert run.code == 0, run.stderr + run.stdout
    steps = run.result["results"]
    assert [s["concurrency"] for s in steps] == [1, 2, 5]
    for s in steps:
        # Each step's server-side count is its own: the collector was reset before it.
        assert s["total_requests"] > 0
        assert s["server_timing"]["events"]["request"]["count"] == s["total_requests"]
        assert s["memory"]["start_bytes"] > 0
    assert " Saturation Test Results" in run.stdout
    assert "Tearing down telemetry collector... ok" in run.stdout
    assert leftovers(standin)["table"] == Atom("undefined")


def test_interrupted_lightning_run_reports_timing_and_tears_the_collector_down(
    standin, sink, tmp_path
):
    out_json = tmp_path / "r.json"
    log = tmp_path / "out.txt"
    proc = subprocess.Popen(
        chanload_command(
            "run",
            "--scenario",
            "happy_path",
            "--duration",
            "60",
            "--concurrency",
            "2",
            "--json",
            str(out_json),
            *lightning_args(standin, sink),
        ),
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while "Command:" not in log.read_text():  # the banner: the load starts now
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        # and the collector is there while it runs
        assert leftovers(standin)["table"] != Atom("undefined")
        proc.send_signal(2)  # SIGINT
        code = proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 130, text
    assert "Tearing down telemetry collector... ok" in text
    r = json.loads(out_json.read_text())
    assert r["interrupted"] is True
    assert r["server_timing"]["events"]["request"]["count"] == r["total_requests"] > 0
    left = leftovers(standin)
    assert left["table"] == Atom("undefined")
    assert left["handlers"] == []


def test_the_cookie_given_on_the_command_line_is_not_in_ps(standin, sink, tmp_path):
    log = tmp_path / "out.txt"
    proc = subprocess.Popen(
        chanload_command(
            "run", "--scenario", "happy_path", "--duration", "2", "--concurrency", "1",
            *lightning_args(standin, sink),
        ),
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "Command:" not in log.read_text():  # running, after the re-exec
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()  # what ps shows
        assert standin.cookie.encode() not in cmdline
        assert b"cli.chanload" in cmdline and b"--node" in cmdline
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "--cookie ***" in text and standin.cookie not in text


def test_a_node_stalled_mid_run_the_run_still_ends_with_bounded_waits(standin, sink, tmp_path):
    # SIGSTOP: the node (and the proxy it serves) stops answering, its socket stays open.
    out_json = tmp_path / "r.json"
    log = tmp_path / "out.txt"
    proc = subprocess.Popen(
        chanload_command(
            "run", "--scenario", "happy_path", "--duration", "3", "--concurrency", "2",
            "--timeout", "2", "--json", str(out_json), *lightning_args(standin, sink),
        ),
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "Starting load test" not in log.read_text():  # collector deployed, load on
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        time.sleep(0.5)
        standin.proc.send_signal(signal.SIGSTOP)
        stalled = time.monotonic()
        code = proc.wait(60)
        took = time.monotonic() - stalled
    finally:
        standin.proc.send_signal(signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 0, text[-3000:]
    r = json.loads(out_json.read_text())
    assert r["errors"]["timeout"] > 0  # the requests in flight at the stall
    assert r["memory"]["lost_at"] is not None and "no answer" in r["memory"]["lost_reason"]
    assert r["server_timing"]["lost"]
    assert "Tearing down telemetry collector... failed" in text
    # the rest of the load, the 2 s timeout, a 5 s memory sample, then 3 s per call
    assert took < 20, f"took {took:.1f}s after the stall"
