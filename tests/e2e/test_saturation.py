"""--scenario saturation: steps, one row per step, and the knee."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest

from tests.support import ROOT, run_chanload, wait_until


@pytest.fixture
def serial(tmp_path):
    log = tmp_path / "serial.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.serial"],
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    m = wait_until(lambda: re.search(r"listening on (http://\S+)", log.read_text()), 10, "serial")
    yield m.group(1)
    proc.kill()
    proc.wait()


@pytest.mark.slow
def test_saturation_finds_the_knee_of_a_slow_sink(serial, tmp_path):
    # One request at a time, 10 ms each: p99 is about 10 ms x VUs.
    path = tmp_path / "sat.csv"
    run = run_chanload(
        tmp_path,
        "--scenario",
        "saturation",
        "--channel-url",
        f"{serial}/x?delay=10",
        "--concurrency",
        "10",
        "--duration",
        "1.5",
        "--slo-p99",
        "35",
        "--csv",
        str(path),
        "--quiet",
        "--no-preflight",
    )
    assert run.code == 0, run.stderr
    doc = run.result
    steps = [r["concurrency"] for r in doc["results"]]
    assert steps == [1, 2, 5, 10]  # the seed's levels up to --concurrency
    assert doc["knee"]["concurrency"] == 2
    assert doc["knee"]["reason"].startswith("the highest step with p99 <= 35ms")
    p99 = [r["p99_us"] for r in doc["results"]]
    assert p99[0] < 35_000 and p99[1] < 35_000 and p99[2] > 35_000
    rows = list(csv.DictReader(path.open()))
    assert [int(r["concurrency"]) for r in rows] == steps
    assert all(r["scenario"] == "saturation" for r in rows)
    assert " Saturation Test Results" in run.stdout
    assert re.search(r"^  2 .*<- knee$", run.stdout, re.M)
    assert json.dumps(doc)  # the whole document is JSON


def test_saturation_by_rate_steps(sink, tmp_path):
    run = run_chanload(
        tmp_path,
        "--scenario",
        "saturation",
        "--channel-url",
        sink.url,
        "--rate",
        "200",
        "--concurrency",
        "10",
        "--duration",
        "0.3",
        "--quiet",
    )
    assert run.code == 0, run.stderr
    rates = [r["target_rate"] for r in run.result["results"]]
    assert rates == [20, 40, 60, 80, 100, 120, 140, 160, 180, 200]
    assert run.result["knee"]["rate"] == 200  # chansink keeps up with all of them
