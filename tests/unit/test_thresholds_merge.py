"""Thresholds, the exact merge of runs, compare, and the HdrHistogram log."""

from __future__ import annotations

import random

import pytest
from hdrh.log import HistogramLogReader

from engine.measure.compare import compare
from engine.measure.merge import merge
from engine.measure.metrics import Recorder
from engine.measure.result import RunResult
from engine.measure.thresholds import ThresholdError, evaluate, parse
from engine.report.hdrlog import write_hdr_log


def result_from(
    latencies_per_second: list[list[int]], start: float, statuses=None, rate=None, open_model=None
) -> dict:
    return build_result(latencies_per_second, start, statuses, rate, open_model).to_dict()


def build_result(
    latencies_per_second: list[list[int]], start: float, statuses=None, rate=None, open_model=None
) -> RunResult:
    rec = Recorder()
    for i, values in enumerate(latencies_per_second):
        rec.latencies += values
        rec.statuses[200] = rec.statuses.get(200, 0) + len(values)
        if open_model is not None:
            rec.latencies_uncorrected += [v // 2 for v in values]
            rec.send_lags += [v // 10 for v in values]
            rec.dispatch_lags += [v // 100 for v in values]
        rec.snapshot(float(i + 1), 1.0, 2)
    if open_model is not None:
        rec.scheduled, rec.late, rec.dropped = open_model
    for status, n in (statuses or {}).items():
        rec.statuses[status] = rec.statuses.get(status, 0) + n
    r = RunResult.build(
        recorder=rec,
        elapsed=float(len(latencies_per_second)),
        started=start,
        ended=start + len(latencies_per_second),
        scenario="happy_path",
        concurrency=2,
        url="http://x/",
        target_kind="url",
        parser="httptools",
        command="chanload run",
        config={},
        target_rate=rate,
    )
    return r


def test_merge_equals_one_run_over_the_union_of_samples():
    rng = random.Random(4)
    a = [[rng.randint(100, 50_000) for _ in range(2000)] for _ in range(3)]
    b = [[rng.randint(200, 90_000) for _ in range(1500)] for _ in range(3)]
    start = 1_700_000_000.0
    merged = merge([result_from(a, start), result_from(b, start + 0.2)])
    union = result_from([x + y for x, y in zip(a, b, strict=True)], start)
    for key in (
        "total_requests",
        "responses",
        "p50_us",
        "p95_us",
        "p99_us",
        "p999_us",
        "min_us",
        "max_us",
        "mean_us",
        "error_count",
    ):
        assert merged[key] == union[key], key
    assert merged["statuses"] == union["statuses"]
    assert merged["concurrency"] == 4
    assert len(merged["series"]) == 3
    for got, want in zip(merged["series"], union["series"], strict=True):
        assert got["requests"] == want["requests"]
        assert (got["p50_us"], got["p99_us"]) == (want["p50_us"], want["p99_us"])


def test_merge_of_open_model_runs_adds_rates_counts_and_every_histogram():
    rng = random.Random(9)
    a = [[rng.randint(100, 50_000) for _ in range(900)] for _ in range(2)]
    b = [[rng.randint(300, 70_000) for _ in range(700)] for _ in range(2)]
    start = 1_700_000_000.0
    merged = merge(
        [
            result_from(a, start, rate=500.0, open_model=(1000, 30, 2)),
            result_from(b, start + 0.1, rate=400.0, open_model=(800, 10, 1)),
        ]
    )
    union = result_from(
        [x + y for x, y in zip(a, b, strict=True)], start, rate=900.0, open_model=(1800, 40, 3)
    )
    for key in (
        "target_rate",
        "scheduled",
        "late",
        "dropped",
        "p50_uncorrected_us",
        "p99_uncorrected_us",
        "p999_uncorrected_us",
        "max_uncorrected_us",
        "send_lag_p50_us",
        "send_lag_p99_us",
        "send_lag_max_us",
        "dispatch_lag_p99_us",
        "kept_up",
    ):
        assert merged[key] == union[key], key
    assert merged["p50_uncorrected_us"] < merged["p50_us"]  # not the corrected ones
    assert merged["achieved_rate"] == round(merged["total_requests"] / merged["duration_s"], 1)


def test_merge_refuses_open_with_closed_model_runs():
    a = result_from([[100]], 1.0, rate=10.0, open_model=(1, 0, 0))
    b = result_from([[100]], 1.0)
    with pytest.raises(ValueError, match="open-model"):
        merge([a, b])


def test_merge_refuses_different_scenarios():
    a = result_from([[100]], 1.0)
    b = dict(a, scenario="large_payload")
    with pytest.raises(ValueError, match="different scenarios"):
        merge([a, b])


@pytest.mark.parametrize(
    ("text", "passed"),
    [
        ("p99<50ms", True),
        ("p99<1ms", False),
        ("p50<=20000us", True),
        ("max<2s", True),
        ("rps>50", True),
        ("rps>1000000", False),
        ("error_rate<0.1%", False),  # 1 error in 100 is 1%
        ("error_rate<0.05", True),  # a fraction: 5%
        ("errors==1", True),
        ("requests>=100", True),
    ],
)
def test_thresholds_pass_and_fail(text, passed):
    r = result_from([[10_000] * 99], 1.0, statuses={503: 1})
    (outcome,) = evaluate([parse(text)], r)
    assert outcome.passed is passed, outcome.line()
    assert text in outcome.line()


def test_thresholds_on_what_was_not_measured_are_na():
    r = result_from([[10_000]], 1.0)
    (outcome,) = evaluate([parse("memory_delta<50MB")], r)
    assert outcome.passed is None
    assert "n/a" in outcome.line()


@pytest.mark.parametrize(
    "text",
    ["p99", "p99<<5ms", "p99<5MB", "memory_delta<5ms", "error_rate<5ms", "nonsense<5", "rps>5ms"],
)
def test_bad_thresholds_are_usage_errors(text):
    with pytest.raises(ThresholdError):
        parse(text)


def test_compare_shows_difference_and_ratio():
    base = result_from([[1000] * 100], 1.0)
    new = result_from([[2000] * 100], 1.0)
    text = compare(base, new, ("old", "new"))
    assert "== happy_path ==" in text
    line = next(x for x in text.splitlines() if x.startswith("p50 "))
    assert "1.0ms" in line and "2.0ms" in line and "+1.0ms" in line and "2.00x" in line


def test_hdr_log_is_readable_by_hdrhistogram_tools(tmp_path):
    r = result_from([[1000] * 10, [], [3000] * 5], 1_700_000_000.0)
    path = tmp_path / "run.hlog"
    assert write_hdr_log(path, r) == 2
    reader = HistogramLogReader(str(path), None)
    first = reader.get_next_interval_histogram()
    second = reader.get_next_interval_histogram()
    assert first.get_total_count() == 10 and second.get_total_count() == 5
    assert reader.get_next_interval_histogram() is None
