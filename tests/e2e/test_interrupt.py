"""Ctrl-C and SIGTERM during `chanload run`: partial results, printed and written, exit 130."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time

import pytest

from engine.interrupt import GRACE
from tests.support import ROOT, chanload_command, wait_until

# From the signal to the exit: the grace, then the report (imports, JSON, CSV).
MARGIN = 4.0


class Running:
    """`chanload run ...` in the background, its output in a file."""

    def __init__(self, tmp_path, *args: str) -> None:
        self.json = tmp_path / "result.json"
        self.csv = tmp_path / "result.csv"
        self.log = tmp_path / "chanload.out"
        self.err = tmp_path / "chanload.err"
        cmd = chanload_command("run", *args, "--json", str(self.json), "--csv", str(self.csv))
        self.proc = subprocess.Popen(
            cmd,
            stdout=open(self.log, "wb"),  # noqa: SIM115 - the child owns it
            stderr=open(self.err, "wb"),  # noqa: SIM115
            cwd=ROOT,
        )

    def output(self) -> str:
        return self.log.read_text()

    def signal(self, sig: int) -> float:
        self.proc.send_signal(sig)
        return time.monotonic()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"chanload still running {timeout}s after the signal:\n{self.output()[-2000:]}"
            ) from None

    def result(self) -> dict:
        return json.loads(self.json.read_text())


def sink_says(sink, pattern: str):
    return lambda: re.search(pattern, sink.output())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_writes_the_partial_result_and_exits_130(sink, tmp_path, sig):
    run = Running(
        tmp_path,
        "--scenario", "happy_path", "--channel-url", sink.url + "/c", "--sink", sink.url,
        "--duration", "60", "--concurrency", "4",
    )  # fmt: skip
    try:
        wait_until(sink_says(sink, r"[1-9]\d* requests"), 30, "requests to reach the sink")
        sent = run.signal(sig)
        code = run.wait(GRACE + MARGIN)
        took = time.monotonic() - sent
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert code == 130, run.err.read_text()
    assert took < GRACE + MARGIN
    out = run.output()
    assert "Scenario:    happy_path (interrupted: partial results)" in out
    assert f"{sig.name}: stopping" in run.err.read_text()
    result = run.result()
    assert result["interrupted"] is True
    assert result["total_requests"] > 0 and result["error_count"] == 0
    assert result["duration_s"] < 30  # stopped, not run to the end
    rows = list(csv.DictReader(run.csv.open()))
    assert len(rows) == 1 and rows[0]["interrupted"] == "true"
    assert int(rows[0]["total_requests"]) == result["total_requests"]


def test_requests_in_flight_after_the_grace_are_abandoned_not_errors(sink, tmp_path):
    run = Running(
        tmp_path,
        "--scenario", "slow_sink", "--delay", "20000", "--channel-url", sink.url + "/c",
        "--sink", sink.url, "--duration", "60", "--concurrency", "3", "--timeout", "60",
        "--no-preflight",
    )  # fmt: skip
    try:
        wait_until(sink_says(sink, r" 3 open, "), 30, "three requests in flight at the sink")
        sent = run.signal(signal.SIGINT)
        code = run.wait(GRACE + MARGIN)
        took = time.monotonic() - sent
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert code == 130
    assert GRACE - 0.2 < took < GRACE + MARGIN  # they got the grace, and no more
    result = run.result()
    assert result["abandoned"] == 3
    assert result["error_count"] == 0 and result["total_requests"] == 0
    assert "Abandoned:   3 (still in flight" in run.output()


def test_a_second_signal_stops_at_once_and_writes_nothing(sink, tmp_path):
    run = Running(
        tmp_path,
        "--scenario", "slow_sink", "--delay", "20000", "--channel-url", sink.url + "/c",
        "--sink", sink.url, "--duration", "60", "--concurrency", "2", "--timeout", "60",
        "--no-preflight",
    )  # fmt: skip
    try:
        wait_until(sink_says(sink, r" 2 open, "), 30, "requests in flight at the sink")
        sent = run.signal(signal.SIGINT)
        wait_until(lambda: "SIGINT: stopping" in run.err.read_text(), 5, "the first signal")
        run.signal(signal.SIGINT)
        code = run.wait(GRACE + MARGIN)
        took = time.monotonic() - sent
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert code == 130
    assert took < GRACE  # did not wait out the grace
    assert "interrupted twice: stopped at once" in run.err.read_text()
    assert not run.json.exists() and not run.csv.exists()


def test_interrupted_workers_stop_and_their_shares_are_merged(sink, tmp_path):
    run = Running(
        tmp_path,
        "--scenario", "happy_path", "--channel-url", sink.url + "/c", "--sink", sink.url,
        "--duration", "60", "--concurrency", "4", "--workers", "2",
    )  # fmt: skip
    try:
        wait_until(sink_says(sink, r"[1-9]\d* requests"), 60, "requests to reach the sink")
        run.signal(signal.SIGINT)  # the parent only: it tells the workers
        code = run.wait(GRACE + MARGIN + 2)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert code == 130, run.err.read_text()
    result = run.result()
    assert result["interrupted"] is True
    assert result["total_requests"] > 0 and result["error_count"] == 0
    assert result["duration_s"] < 30
    # no worker left behind: nothing of ours still talks to the sink
    wait_until(sink_says(sink, r" 0 open, "), 10, "the workers' connections to close")


def test_interrupted_saturation_keeps_the_steps_it_ran(sink, tmp_path):
    run = Running(
        tmp_path,
        "--scenario", "saturation", "--channel-url", sink.url + "/c", "--sink", sink.url,
        "--duration", "3", "--concurrency", "20",
    )  # fmt: skip
    try:
        wait_until(lambda: "Step 2/" in run.output(), 30, "the second step")
        run.signal(signal.SIGINT)
        code = run.wait(GRACE + MARGIN)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert code == 130, run.err.read_text()
    doc = run.result()
    assert doc["interrupted"] is True
    steps = doc["results"]
    assert len(steps) == 2
    assert steps[0]["interrupted"] is False and steps[1]["interrupted"] is True
    assert "Interrupted in step 2" in run.output()
    assert len(list(csv.DictReader(run.csv.open()))) == 2
