"""The open model (--rate) against chansink: on schedule, and honest about a stall."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from tests.support import run_chanload


def test_rate_is_held_within_two_percent(sink, tmp_path):
    run = run_chanload(
        tmp_path,
        "--scenario",
        "direct_sink",
        "--sink",
        sink.url,
        "--rate",
        "500",
        "--duration",
        "4",
        "--concurrency",
        "10",
        "--quiet",
    )
    assert run.code == 0, run.stderr
    r = run.result
    assert r["target_rate"] == 500
    assert r["scheduled"] == 2000
    assert abs(r["achieved_rate"] - 500) / 500 <= 0.02, r["achieved_rate"]
    assert r["late"] == 0 and r["dropped"] == 0
    assert r["kept_up"] is True
    assert " Open model:  target 500 req/s" in run.stdout
    assert " Latency (corrected: from the intended send time):" in run.stdout
    assert " Latency (uncorrected: from the actual send):" in run.stdout
    # the seed's columns hold the corrected values; the uncorrected ones have their own
    assert r["p50_us"] >= r["p50_uncorrected_us"]


@pytest.mark.slow
def test_a_frozen_sink_shows_in_the_corrected_latency_only(sink, tmp_path):
    """SIGSTOP the sink for 1 s: requests due meanwhile wait (late, counted); measured from
    when they were due they show the stall, measured from their send they do not."""

    def freeze():
        os.kill(sink.pid, signal.SIGSTOP)
        threading.Timer(1.0, os.kill, (sink.pid, signal.SIGCONT)).start()

    timer = threading.Timer(1.5, freeze)
    timer.start()
    try:
        run = run_chanload(
            tmp_path,
            "--scenario",
            "direct_sink",
            "--sink",
            sink.url,
            "--rate",
            "200",
            "--duration",
            "4",
            "--concurrency",
            "2",
            "--quiet",
        )
    finally:
        timer.cancel()
        os.kill(sink.pid, signal.SIGCONT)
    assert run.code == 0, run.stderr
    r = run.result
    assert r["late"] >= 100  # about 200 were due during the second the sink was frozen
    assert r["dropped"] == 0  # they waited well under the 30 s timeout
    assert r["p99_us"] >= 300_000, r["p99_us"]  # corrected: hundreds of ms
    assert r["p99_uncorrected_us"] < 100_000, r["p99_uncorrected_us"]  # uncorrected: no
    assert r["max_uncorrected_us"] >= 900_000  # the two requests caught in flight
    assert r["kept_up"] is True  # the generator itself was fine: this is the target's stall


def test_late_requests_still_waiting_at_the_end_are_dropped_and_the_run_ends(sink, tmp_path):
    # Two connections, 20 ms a request: 100 a second can go out of 400 due.
    run = run_chanload(
        tmp_path,
        "--scenario",
        "happy_path",
        "--channel-url",
        f"{sink.url}/x?delay=20",
        "--rate",
        "400",
        "--duration",
        "1.5",
        "--concurrency",
        "2",
        "--quiet",
        "--no-preflight",
        timeout=30,
    )
    assert run.code == 0, run.stderr
    r = run.result
    assert r["scheduled"] == 600
    assert r["error_count"] == 0
    assert 100 <= r["total_requests"] <= 200, r["total_requests"]
    # every scheduled request either went out or is counted as dropped
    assert r["total_requests"] + r["dropped"] == r["scheduled"]
    assert r["late"] >= r["dropped"] > 300
    assert r["duration_s"] < 3  # it ended with the schedule, not after a timeout
