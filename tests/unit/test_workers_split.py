"""--workers: how the load is split, and how the workers' recorders add up (exactly)."""

from __future__ import annotations

import itertools
import pickle
import random

import pytest

from engine.config import ConfigError, RunConfig
from engine.drive import make_executor
from engine.load.executors import ConstantArrivalRate, ConstantVUs, RampingArrivalRate, RampingVUs
from engine.load.executors.ramping_vus import split
from engine.measure.metrics import Recorder
from engine.workers import encode


@pytest.mark.parametrize(
    ("total", "parts", "expected"),
    [(10, 2, [5, 5]), (10, 3, [4, 3, 3]), (2, 3, [1, 1, 0]), (0, 2, [0, 0]), (7, 1, [7])],
)
def test_split_is_even_and_whole(total, parts, expected):
    assert split(total, parts) == expected
    assert sum(split(total, parts)) == total


def test_constant_vus_are_shared_out():
    config = RunConfig(concurrency=10, duration=5)
    shares = [make_executor(config, i, 3) for i in range(3)]
    assert all(isinstance(e, ConstantVUs) for e in shares)
    assert [e.vus for e in shares] == [4, 3, 3]


def test_ramping_vus_shares_add_up_to_every_step():
    config = RunConfig(scenario="ramp_up", concurrency=7, duration=10)
    whole = make_executor(config)
    shares = [make_executor(config, i, 2) for i in range(2)]
    assert all(isinstance(e, RampingVUs) for e in shares)
    for step in range(1, 11):
        assert sum(e.local_step_vus(step) for e in shares) == whole.step_vus(step)
    # step 1 of the seed's ramp has 1 VU in all: one worker runs none yet
    assert [e.local_step_vus(1) for e in shares] == [1, 0]
    # every worker announces the whole load's steps
    assert shares[1].announcements() == whole.announcements()
    assert whole.announcements()[0] == (0.0, "  [ramp] Step 1/10: 1 VUs for 1s")


def test_rate_is_split_and_offset_into_one_schedule():
    config = RunConfig(concurrency=9, duration=5, rate=3000)
    shares = [make_executor(config, i, 3) for i in range(3)]
    assert all(isinstance(e, ConstantArrivalRate) for e in shares)
    assert [e.rate for e in shares] == [1000, 1000, 1000]
    assert [e.max_connections for e in shares] == [3, 3, 3]
    # worker i's request k is due at i/3000 + k/1000: together, every 1/3000 s
    due = sorted(e.offset + k / e.rate for e in shares for k in range(100))
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(due)}
    assert gaps == {round(1 / 3000, 9)}


def test_ramping_rate_shares():
    config = RunConfig(scenario="ramp_up", concurrency=4, duration=10, rate=1000)
    shares = [make_executor(config, i, 2) for i in range(2)]
    assert all(isinstance(e, RampingArrivalRate) for e in shares)
    assert [(e.count, e.index, e.max_connections) for e in shares] == [(2, 0, 2), (2, 1, 2)]
    assert shares[0].announcements()[-1][1] == "  [ramp] Step 10/10: 1000 req/s for 1s"


def test_more_workers_than_connections_is_a_usage_error():
    with pytest.raises(ConfigError) as exc:
        RunConfig(concurrency=2, workers=3)
    assert "--workers 3 needs --concurrency of at least 3" in str(exc.value)
    with pytest.raises(ConfigError, match="--workers must be 1-64"):
        RunConfig(workers=0)
    # saturation's first steps have fewer VUs than workers: those steps use fewer
    assert RunConfig(scenario="saturation", concurrency=2, workers=4).workers == 4


def _record(recorder: Recorder, latencies: list[int], statuses: dict[int, int]) -> None:
    recorder.latencies.extend(latencies)
    for status, n in statuses.items():
        recorder.statuses[status] = recorder.statuses.get(status, 0) + n


def test_absorbing_workers_equals_one_recorder_over_the_union():
    rng = random.Random(7)
    parts = [[rng.randint(20, 200_000) for _ in range(5000)] for _ in range(3)]
    seconds = 3
    workers = [Recorder() for _ in parts]
    single = Recorder()
    for second in range(1, seconds + 1):
        for w, values in zip(workers, parts, strict=True):
            chunk = values[(second - 1) * 1000 : second * 1000]
            _record(w, chunk, {200: len(chunk) - 1, 503: 1})
            w.bytes_in += 100 * len(chunk)
            w.error("timeout", "timed out")
            w.snapshot(float(second), 1.0, 5)
            _record(single, chunk, {200: len(chunk) - 1, 503: 1})
    for w, values in zip(workers, parts, strict=True):  # the tail after the last tick
        _record(w, values[seconds * 1000 :], {200: len(values) - seconds * 1000})
        _record(single, values[seconds * 1000 :], {200: len(values) - seconds * 1000})
    # The exports travel between processes as pickles.
    exports = [pickle.loads(pickle.dumps(w.export())) for w in workers]
    merged = Recorder()
    merged.absorb(exports)
    single.close()
    merged.close()

    union = [v for values in parts for v in values]
    assert merged.histogram.get_total_count() == len(union) == 15_000
    for p in (50, 90, 99, 99.9):
        expected = single.histogram.get_value_at_percentile(p)
        assert merged.histogram.get_value_at_percentile(p) == expected
    assert merged.min_us == min(union) and merged.max_us == max(union)
    assert merged.statuses == {200: 15_000 - 9, 503: 9}
    assert merged.errors["timeout"] == 9 and merged.error_samples == {"timeout": "timed out"}
    assert merged.bytes_in == 100 * 9000
    assert [s.t for s in merged.series] == [1.0, 2.0, 3.0]
    assert [s.requests for s in merged.series] == [3003, 3003, 3003]  # + 1 timeout each
    assert [s.vus for s in merged.series] == [15, 15, 15]
    assert all(s.statuses == {200: 2997, 503: 3} for s in merged.series)


def test_absorbing_keeps_open_model_and_server_timing():
    a, b = Recorder(), Recorder()
    for r, lag, timing in ((a, 5, 100), (b, 9000, 300)):
        r.latencies_uncorrected.extend([50, 60])
        r.send_lags.extend([lag, lag])
        r.scheduled += 2
        r.late += 1
        r.timing_pending["total"] = [timing, timing * 2]
    merged = Recorder()
    merged.absorb([a.export(), b.export()])
    assert merged.scheduled == 4 and merged.late == 2
    assert merged.histogram_uncorrected.get_total_count() == 4
    assert merged.send_lag.get_max_value() >= 9000
    assert merged.timing_stats["total"] == [4, 100 + 200 + 300 + 600, 100, 600]
    assert merged.timing["total"].get_total_count() == 4


def test_frames_are_length_prefixed_pickles():
    frame = encode(("go", 12.5))
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert pickle.loads(frame[4:]) == ("go", 12.5)
