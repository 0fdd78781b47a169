"""chanload suite --embedded, and the memory verdict against a streaming and a buffering proxy."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess

import pytest

from engine.embedded import Embedded, alive
from tests.support import ROOT, chanload_command, run_chanload, wait_until

SEVEN = [
    "direct_sink",
    "happy_path",
    "ramp_up",
    "large_payload",
    "large_response",
    "mixed_methods",
    "slow_sink",
]


def children_of(output: str) -> list[int]:
    m = re.search(r"chansink at \S+ \(pid (\d+)\), chanproxy at \S+ \(pid (\d+)\)", output)
    assert m, output[:500]
    return [int(m.group(1)), int(m.group(2))]


@pytest.mark.slow
def test_embedded_suite_writes_log_csv_json_and_the_overhead_table(tmp_path):
    out = subprocess.run(
        chanload_command(
            "suite",
            "--embedded",
            "--duration",
            "2",
            "--concurrency",
            "4",
            "--out-dir",
            str(tmp_path),
        ),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr + out.stdout[-3000:]
    logs = list(tmp_path.glob("*.log"))
    csvs = list(tmp_path.glob("*.csv"))
    jsons = list(tmp_path.glob("*.json"))
    assert len(logs) == len(csvs) == len(jsons) == 1
    assert re.fullmatch(r"\d{4}\.\d\d\.\d\d-\d\d\.\d\d\.log", logs[0].name)
    rows = list(csv.DictReader(csvs[0].open()))
    assert [r["scenario"] for r in rows] == SEVEN
    assert all(int(r["error_count"]) == 0 for r in rows)
    doc = json.loads(jsons[0].read_text())
    assert [r["scenario"] for r in doc["results"]] == SEVEN
    assert doc["failed"] is None
    overhead = doc["overhead"]
    assert overhead["p50_us"] == (doc["results"][1]["p50_us"] - doc["results"][0]["p50_us"])
    assert 0 < overhead["rps_ratio"] < 1  # a proxy hop costs something
    log = logs[0].read_text()
    for text in (out.stdout, log):
        assert "Proxy overhead (happy_path - direct_sink):" in text
        assert " Suite results (2s per scenario, 4 VUs)" in text
        for scenario in SEVEN:
            assert f"### {scenario}" in text
    # the proxied scenarios carry the proxy's memory and its Server-Timing
    large = doc["results"][3]
    assert large["memory"]["source"].startswith("pid ")
    assert large["server_timing"]["source"] == "Server-Timing header"
    assert large["memory_verdict"].startswith("streaming")
    for pid in children_of(out.stdout):
        assert not alive(pid)
    # charts, on by default: the overview, each scenario's latency, the proxy's memory
    charts = tmp_path / (logs[0].name.removesuffix(".log") + "-charts")
    names = sorted(p.name for p in charts.glob("*.png"))
    expected = ["suite-overview.png"]
    expected += [f"{s}-latency.png" for s in SEVEN]
    expected += [f"{s}-memory.png" for s in SEVEN if s != "direct_sink"]
    assert names == sorted(expected)
    assert all(p.stat().st_size > 10_000 for p in charts.glob("*.png"))
    assert f"Charts:  {charts}/ ({len(expected)} PNGs)" in out.stdout


@pytest.mark.slow
def test_embedded_suite_over_tls_verifies_every_scenario(tmp_path):
    """--embedded --tls: a CA made at start, https on both legs, chanload verifying."""
    out = subprocess.run(
        chanload_command(
            "suite",
            "--embedded",
            "--tls",
            "--duration",
            "1.5",
            "--concurrency",
            "4",
            "--no-charts",
            "--out-dir",
            str(tmp_path),
        ),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr + out.stdout[-3000:]
    assert "TLS on both legs" in out.stdout
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert [r["scenario"] for r in doc["results"]] == SEVEN
    for r in doc["results"]:
        assert r["url"].startswith("https://127.0.0.1:"), r["url"]
        assert r["error_count"] == 0, (r["scenario"], r["errors"], r["error_samples"])
        assert r["connections"]["tls"]["verified"] is True
        assert r["connections"]["tls_handshake"]["count"] >= 1
    # The proxy's memory was sampled over TLS too (its verdict at 1 MiB over TLS:
    # see the note in README's HTTPS section).
    for r in doc["results"][1:]:
        assert r["memory"]["source"].startswith("pid "), r["scenario"]
        assert r["memory_verdict"], r["scenario"]
    for pid in children_of(out.stdout):
        assert not alive(pid)


def test_tls_without_embedded_is_a_usage_error():
    out = subprocess.run(
        chanload_command("suite", "--tls", "--channel-url", "https://x/"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "--tls is for --embedded" in out.stderr


@pytest.mark.slow
def test_sigint_stops_the_suite_and_its_children(tmp_path):
    log = tmp_path / "suite.out"
    proc = subprocess.Popen(
        chanload_command(
            "suite",
            "--embedded",
            "--duration",
            "3",
            "--concurrency",
            "2",
            "--out-dir",
            str(tmp_path),
        ),
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        wait_until(lambda: "### happy_path" in log.read_text(), 60, "the suite to get going")
        pids = children_of(log.read_text())
        assert all(alive(p) for p in pids)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 130
    wait_until(lambda: not any(alive(p) for p in pids), 10, "the children to go")
    # what ran is kept: direct_sink whole, happy_path partial, nothing after it
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert doc["interrupted"] == "happy_path"
    assert [r["scenario"] for r in doc["results"]] == ["direct_sink", "happy_path"]
    assert [r["interrupted"] for r in doc["results"]] == [False, True]
    rows = list(csv.DictReader(next(tmp_path.glob("*.csv")).open()))
    assert [r["interrupted"] for r in rows] == ["false", "true"]
    assert "Interrupted during happy_path" in log.read_text()


@pytest.mark.slow
@pytest.mark.parametrize(("buffer", "word"), [(False, "streaming"), (True, "buffering suspected")])
def test_memory_verdict_tells_a_streaming_proxy_from_a_buffering_one(tmp_path, buffer, word):
    # A slow sink keeps each 1 MiB body in flight for 300 ms: a buffering proxy
    # holds all of them at once, a streaming one none.
    with Embedded(proxy_buffer=buffer) as emb:
        run = run_chanload(
            tmp_path,
            "--scenario",
            "large_payload",
            "--channel-url",
            emb.channel_url,
            "--delay",
            "300",
            "--duration",
            "3",
            "--concurrency",
            "10",
            "--target-pid",
            str(emb.proxy_pid),
            "--sample-interval",
            "0.2",
            "--quiet",
        )
        pids = emb.pids()
    assert run.code == 0, run.stderr
    assert run.result["memory_verdict"].startswith(word), run.result["memory_verdict"]
    assert f" Verdict:     {word}" in run.stdout
    assert not any(alive(p) for p in pids)  # stopped by the context manager


@pytest.mark.slow
def test_suite_through_any_proxy_url_with_the_scenario_in_it(sink, tmp_path):
    # chansink answers any path, so it can stand for "a proxy" here.
    out = subprocess.run(
        chanload_command(
            "suite",
            "--channel-url",
            sink.url + "/via/{scenario}",
            "--sink",
            sink.url,
            "--duration",
            "0.5",
            "--concurrency",
            "2",
            "--out-dir",
            str(tmp_path),
            "--no-charts",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr + out.stdout[-2000:]
    assert not list(tmp_path.glob("*-charts")) and "Charts:" not in out.stdout
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    urls = {r["scenario"]: r["url"] for r in doc["results"]}
    assert urls["direct_sink"] == sink.url + "/test"
    assert urls["happy_path"] == sink.url + "/via/happy_path"
    assert urls["large_payload"] == sink.url + "/via/large_payload"
    assert urls["slow_sink"] == sink.url + "/via/slow_sink?delay=2000"


def test_a_failing_scenario_stops_the_suite_and_says_which(sink, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
        out = subprocess.run(
            chanload_command(
                "suite",
                "--channel-url",
                f"http://127.0.0.1:{dead}/x",
                "--sink",
                sink.url,
                "--duration",
                "0.5",
                "--concurrency",
                "1",
                "--out-dir",
                str(tmp_path),
            ),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    assert out.returncode == 1
    assert "chanload suite: happy_path failed: could not reach the channel URL" in out.stdout
    assert "Stopped at happy_path" in out.stdout
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert doc["failed"] == "happy_path"
    assert [r["scenario"] for r in doc["results"]] == ["direct_sink"]
