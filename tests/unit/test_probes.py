from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.measure.result import MemorySummary
from engine.observers.memory import MemoryProbe, ProbeLost, process_tree_rss, verdict
from tests.support import rss_bytes, wait_until

MB = 1024 * 1024


def memory(start, peak, end):
    return MemorySummary("test", start, end, peak)


@pytest.mark.parametrize(
    ("mem", "vus", "body", "word"),
    [
        (memory(100 * MB, 110 * MB, 102 * MB), 20, 2 * MB, "streaming"),
        (memory(100 * MB, 120 * MB, 120 * MB), 20, 2 * MB, "buffering suspected"),  # 40 MB
        (memory(100 * MB, 170 * MB, 160 * MB), 100, 2 * MB, "inconclusive"),  # 200 MB
        (memory(100 * MB, 101 * MB, 100 * MB), 20, 1024, "streaming"),
        # small bodies: growth of a few MB is noise, not 100x the 20 KB in flight
        (memory(100 * MB, 103 * MB, 103 * MB), 20, 1024, "streaming"),
        (memory(100 * MB, 112 * MB, 101 * MB), 20, MB, "buffering suspected"),
    ],
)
def test_memory_verdict(mem, vus, body, word):
    text = verdict(mem, concurrency=vus, body_bytes=body)
    assert text.startswith(word), text
    assert f"{vus} VUs x" in text  # the numbers that led there


def test_no_probe_no_verdict():
    assert verdict(None, 10, MB) is None


def test_process_tree_rss_adds_the_children():
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time;"
            "c = [subprocess.Popen([sys.executable, '-c', 'x = bytearray(30_000_000); "
            "import time; time.sleep(60)']) for _ in range(2)];"
            "time.sleep(60)",
        ],
    )
    try:
        figures = wait_until(
            lambda: (f := process_tree_rss(parent.pid))["processes"] == 3 and f,
            15,
            "the children",
        )
        wait_until(lambda: process_tree_rss(parent.pid)["total"] > 70 * MB, 15, "their memory")
        assert process_tree_rss(parent.pid)["total"] > rss_bytes(parent.pid) + 50 * MB
        assert figures["processes"] == 3
    finally:
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text()
        for child in map(int, children.split()):
            os.kill(child, 9)
        parent.kill()
        parent.wait()
    with pytest.raises(ProbeLost):
        process_tree_rss(parent.pid)


def test_probe_takes_a_baseline_samples_and_a_last_sample():
    values = iter([100, 150, 120, 130, 110])

    async def sampler():
        return {"total": next(values)}

    async def scenario():
        probe = MemoryProbe("fake", sampler, interval=0.05)
        await probe.baseline()
        probe.start()
        await asyncio.sleep(0.12)
        return await probe.stop()

    s = asyncio.run(scenario())
    assert s.start_bytes == 100
    assert s.max_bytes == 150
    assert len(s.samples) >= 3
    assert s.samples[0][0] == 0.0
    assert s.series[0] == {"t": 0.0, "total": 100}


def test_probe_marks_when_sampling_was_lost():
    calls = 0

    async def sampler():
        nonlocal calls
        calls += 1
        if calls > 2:
            raise ProbeLost("gone")
        return {"total": 1}

    async def scenario():
        probe = MemoryProbe("fake", sampler, interval=0.02)
        await probe.baseline()
        probe.start()
        await asyncio.sleep(0.1)
        return await probe.stop()

    s = asyncio.run(scenario())
    assert s.lost_at is not None and s.lost_reason == "gone"
    assert len(s.samples) == 2
