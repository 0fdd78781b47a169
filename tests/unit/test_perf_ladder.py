"""`make perf-ladder`'s report: its checks fail when the threshold does not separate the cases."""

from __future__ import annotations

import argparse

from bench.perf_ladder import CASES, case_name, render, summarize

MB = 1024 * 1024


def run(ratios, verdict, top=10 * MB):
    return {
        "ratios": ratios,
        "verdict": verdict,
        "one_figure": "buffering suspected",
        "first_pass_top_growth": top,
        "errors": 0,
        "requests": 100,
    }


def results(stream_last: float) -> dict:
    """Every case's runs: buffering at 1.0x, streaming 0.8x then ``stream_last`` twice."""
    out = {}
    for kind, mode, size, *_ in CASES:
        name = case_name(kind, mode, size)
        if mode == "buffer":
            r = run([1.0, 1.02], "buffering suspected" if kind != "mitmproxy" else "inconclusive")
        else:
            r = run([0.8, stream_last, stream_last], "streaming")
        out[name] = [{"cold": r, "warm": r}]
    return out


ARGS = argparse.Namespace(vus=10, step=1.0, rounds=1)
INFO = {"date": "today", "python": "3"}


def test_the_report_passes_when_the_threshold_separates_the_cases():
    text, ok = render(ARGS, INFO, CASES, results(stream_last=0.4))
    assert ok, text
    assert "**1.01**" in text and "**0.40**" in text and "every verdict as expected" in text


def test_the_report_fails_when_a_streaming_proxy_reaches_the_threshold():
    text, ok = render(ARGS, INFO, CASES, results(stream_last=0.8))
    assert not ok
    assert "the threshold does not separate them" in text


def test_a_cold_buffering_mitmproxy_called_streaming_fails_the_report():
    res = results(stream_last=0.4)
    res["mitmproxy buffer 1 MiB"][0]["cold"] = run([0.1], "streaming")
    text, ok = render(ARGS, INFO, CASES, res)
    assert not ok and "mitmproxy buffer 1 MiB round 1 cold: streaming" in text


def test_summarize_reads_the_ladder_from_a_result():
    step = {"in_flight_bytes": MB, "peak_growth_bytes": 0, "body_bytes": MB // 10}
    top = {"in_flight_bytes": 11 * MB, "peak_growth_bytes": 5 * MB, "body_bytes": MB}
    result = {
        "memory_verdict": "streaming: growth does not follow",
        "memory_ladder": {"passes": [[step, top]], "one_figure_verdict": "buffering suspected: x"},
        "error_count": 0,
        "total_requests": 7,
    }
    s = summarize(result)
    assert s["ratios"] == [0.5] and s["verdict"] == "streaming"
    assert s["one_figure"] == "buffering suspected" and s["first_pass_top_growth"] == 5 * MB
