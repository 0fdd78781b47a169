from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.measure.result import MemorySummary
from engine.observers.memory import (
    LadderStep,
    MemoryProbe,
    ProbeLost,
    ladder_configs,
    process_tree_rss,
    verdict,
)
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


def steps(*growth_mb, body=MB, vus=10):
    """A ladder pass: bodies of 1/16, 1/4 and all of ``body``, with these growths."""
    sizes = [body // 16, body // 4, body]
    return [LadderStep(b, b * vus, int(g * MB)) for b, g in zip(sizes, growth_mb, strict=True)]


@pytest.mark.parametrize(
    ("passes", "word", "says"),
    [
        ([steps(0.3, 0.4, 0.4)], "streaming", "does not follow"),
        (
            [steps(0.5, 3.1, 11.3), steps(0.7, 3.1, 11.5), steps(0.6, 3.0, 11.4)],
            "buffering suspected",
            "median of 3 passes",
        ),
        # a cold allocator: followed the bodies once, then faded
        (
            [steps(2.7, 5.4, 12.0), steps(0.3, 0.3, 3.0), steps(0.2, 0.2, 2.0)],
            "streaming",
            "warm-up",
        ),
        # a buffering proxy whose second pass dips: the median holds
        (
            [steps(0.6, 2.5, 10.0), steps(0.3, 2.0, 6.9), steps(0.6, 2.6, 10.1)],
            "buffering suspected",
            "1.00x their increase",
        ),
        # a proxy streaming in large reads holds half of each body: not whole bodies
        ([steps(0.1, 0.2, 4.8)], "streaming", "0.50x their increase"),
        ([steps(0.0, 0.1, 0.2, body=128 * 1024)], "inconclusive", "too little"),
        # memory kept from the cold pass given back during a warm one: no reading
        (
            [steps(9.4, 32.9, 131.8), steps(0.2, 0.3, -37.1), steps(0.1, 0.1, 0.1)],
            "inconclusive",
            "fell 37.1 MB",
        ),
        # 13x the bodies cold, flat warm: more than streaming can hold, reused
        (
            [steps(9.4, 32.9, 131.8), steps(0.2, 0.3, 0.1), steps(0.1, 0.2, 0.3)],
            "inconclusive",
            "13.1x the bodies",
        ),
    ],
)
def test_ladder_verdict(passes, word, says):
    text = verdict(memory(100 * MB, 104 * MB, 101 * MB), 10, MB, passes)
    assert text.startswith(word), text
    assert says in text, text


def test_a_flat_ladder_then_a_growing_run_is_not_called_streaming():
    text = verdict(memory(100 * MB, 190 * MB, 180 * MB), 10, MB, [steps(0.1, 0.2, 0.3)])
    assert text.startswith("inconclusive") and "leak" in text, text


def test_the_ladder_grows_the_body_of_interest_at_the_runs_vus():
    from engine.config import RunConfig

    up = RunConfig(scenario="large_payload", concurrency=10, channel_url="http://127.0.0.1:9/x")
    sizes = [c.payload_bytes for c in ladder_configs(up)]
    assert sizes == [MB // 16, MB // 4, MB]
    assert {(c.concurrency, c.rate, c.workers, c.duration) for c in ladder_configs(up)} == {
        (10, None, 1, 2.0)
    }
    down = RunConfig(scenario="large_response", concurrency=10, channel_url="http://127.0.0.1:9/x")
    assert [c.response_bytes for c in ladder_configs(down)] == [MB // 16, MB // 4, MB]
    # Too few bytes in flight to tell from noise (8 VUs x 1 MiB adds 7.5 MB, half of
    # it under 4 MB), or switched off: no ladder.
    assert ladder_configs(RunConfig(scenario="large_payload", concurrency=8)) == []
    assert len(ladder_configs(RunConfig(scenario="large_payload", concurrency=9))) == 3
    assert ladder_configs(RunConfig(scenario="large_payload", memory_ladder=0)) == []


def test_the_ladder_runs_three_passes_unless_the_first_is_flat():
    from engine.config import RunConfig
    from engine.observers.memory import MemoryObserver

    obs = MemoryObserver(lambda interval: None)
    config = RunConfig(scenario="large_payload", concurrency=10)
    assert len(obs.ladder_steps(config)) == 3  # the first pass
    obs.ladder = [steps(0.3, 0.4, 0.4)]
    assert obs.ladder_steps(config) == []  # flat: streaming, done
    obs.ladder = [steps(0.5, 1.0, 2.0)]
    assert obs.ladder_steps(config) == []  # 0.16x: under FLAT, done
    obs.ladder = [steps(0.5, 1.0, 3.2)]
    assert len(obs.ladder_steps(config)) == 3  # 0.29x: more passes decide
    obs.ladder = [steps(0.5, 3.1, 11.3)]
    assert len(obs.ladder_steps(config)) == 3
    obs.ladder = [steps(0.5, 3.1, 11.3), steps(0.3, 0.3, 0.4)]
    assert len(obs.ladder_steps(config)) == 3  # the third, whatever the second said
    obs.ladder = [steps(0.5, 3.1, 11.3), steps(0.7, 3.1, 11.5), steps(0.6, 3.0, 11.4)]
    assert obs.ladder_steps(config) == []  # three passes at most
