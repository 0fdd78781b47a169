"""Thousands of connections: open-file limits raised or explained, connects staggered."""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import time

from tests.support import ROOT, chanload_command, rss_bytes, start_sink


def chanload_limited(soft: int, hard: int, *args: str, timeout: float = 120):
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run(
        chanload_command("run", *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        preexec_fn=limit,
    )


def test_a_limit_too_low_to_raise_is_a_usage_error_that_says_what_to_run():
    out = chanload_limited(
        256, 256, "--scenario", "direct_sink", "--sink", "http://127.0.0.1:9",
        "--concurrency", "1000",
    )  # fmt: skip
    assert out.returncode == 2
    assert "needs about 1064 open files" in out.stderr
    assert "ulimit -n 1064" in out.stderr
    assert "could not reach" not in out.stderr  # refused before any traffic


def test_the_soft_limit_is_raised_when_the_hard_one_allows(sink, tmp_path):
    result = tmp_path / "r.json"
    out = chanload_limited(
        256, 20000, "--scenario", "direct_sink", "--sink", sink.url, "--concurrency", "600",
        "--duration", "1", "--json", str(result),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    r = json.loads(result.read_text())
    assert r["error_count"] == 0 and r["total_requests"] >= 600


def test_five_thousand_connections_all_connect(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 6000:  # root may raise it; anyone else is told what the test needs
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, 6000))
        except (ValueError, OSError):
            raise AssertionError("this test needs a hard open-files limit of 6000") from None
    sink = start_sink(tmp_path)
    result = tmp_path / "r.json"
    err = tmp_path / "err.txt"
    peak = 0
    try:
        proc = subprocess.Popen(
            chanload_command(
                "run", "--scenario", "direct_sink", "--sink", sink.url, "--concurrency", "5000",
                "--duration", "4", "--json", str(result),
            ),
            stdout=subprocess.DEVNULL, stderr=open(err, "wb"), cwd=ROOT,  # noqa: SIM115
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError, AssertionError):  # exiting: /proc half gone
                peak = max(peak, rss_bytes(proc.pid))
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
    finally:
        sink.stop()
    assert code == 0, err.read_text()
    # memory stays bounded: 5,000 connections cost chanload well under 256 MiB
    assert 0 < peak < 256 * 1024 * 1024, peak
    r = json.loads(result.read_text())
    assert r["errors"]["connect"] == 0, r["error_samples"]
    assert r["error_count"] == 0
    # every VU got its own connection
    assert r["unconnected_vus"] == 0
    assert sink.summary["accepted"] >= 5000
