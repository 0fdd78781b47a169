"""`chanload run` end to end: real sockets, a real chansink child, both parsers."""

from __future__ import annotations

import re
import signal

import pytest
from hdrh.histogram import HdrHistogram

from tests.support import run_chanload, start_flaky

PARSERS = ["httptools", "h11"]
MIB = 1024 * 1024


def common(sink, parser, *args, duration="1.5", concurrency="4"):
    return (
        "--duration",
        duration,
        "--concurrency",
        concurrency,
        "--parser",
        parser,
        "--quiet",
        *args,
    )


def assert_counts_match_the_sink(run, sink) -> None:
    r = run.result
    sink.stop()
    assert sink.summary["requests"] == r["total_requests"] + r["preflight_requests"]
    assert sink.summary["responses"] == r["responses"] + r["preflight_requests"]


@pytest.mark.parametrize("parser", PARSERS)
def test_direct_sink_counts_equal_the_sinks(sink, tmp_path, parser):
    run = run_chanload(
        tmp_path, "--scenario", "direct_sink", "--sink", sink.url, *common(sink, parser)
    )
    assert run.code == 0, run.stderr
    r = run.result
    assert r["total_requests"] > 100
    assert r["error_count"] == 0 and r["transport_errors"] == 0
    assert r["statuses"] == {"200": r["total_requests"]}
    assert r["url"] == f"{sink.url}/test"
    assert r["target_kind"] == "direct"
    assert r["preflight_requests"] == 1
    h = HdrHistogram.decode(r["histogram"])
    assert h.get_total_count() == r["responses"]
    assert r["min_us"] <= r["p50_us"] <= r["p95_us"] <= r["p99_us"] <= r["p999_us"]
    # percentiles are bucket upper edges (3 significant digits); min and max are exact
    assert r["p999_us"] <= r["max_us"] * 1.001 + 1
    assert sum(s["requests"] for s in r["series"]) == r["total_requests"]
    assert_counts_match_the_sink(run, sink)
    assert " Channel Load Test Results" in run.stdout
    assert "direct_sink (baseline)" in run.stdout


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize(
    "scenario", ["happy_path", "ramp_up", "large_payload", "large_response", "mixed_methods"]
)
def test_every_proxy_scenario_runs_through_a_channel_url(sink, tmp_path, parser, scenario):
    extra = ()
    if scenario == "large_payload":
        extra = ("--payload-size", "65536")
    if scenario == "large_response":
        extra = ("--response-size", "65536")
    run = run_chanload(
        tmp_path,
        "--scenario",
        scenario,
        "--channel-url",
        f"{sink.url}/channels/abc/test",
        *common(sink, parser, *extra, duration="2"),
    )
    assert run.code == 0, run.stderr
    r = run.result
    assert r["total_requests"] > 10
    assert r["error_count"] == 0
    assert r["target_kind"] == "url"
    if scenario == "ramp_up":
        steps = re.findall(r"\[ramp\] Step (\d+)/10: (\d+) VUs", run.stdout)
        assert [int(s) for s, _ in steps] == list(range(1, 11))
        assert [int(v) for _, v in steps] == [1, 1, 1, 1, 2, 2, 2, 3, 3, 4]
    assert_counts_match_the_sink(run, sink)


@pytest.mark.parametrize("parser", PARSERS)
def test_large_bodies_are_counted_to_the_byte(sink, tmp_path, parser):
    run = run_chanload(
        tmp_path,
        "--scenario",
        "large_payload",
        "--channel-url",
        sink.url,
        *common(sink, parser, "--payload-size", str(MIB)),
    )
    assert run.code == 0, run.stderr
    up = run.result
    assert up["errors"] == {k: 0 for k in up["errors"]}
    assert up["body_bytes_out"] == up["total_requests"] * MIB
    run2 = run_chanload(
        tmp_path,
        "--scenario",
        "large_response",
        "--channel-url",
        sink.url,
        *common(sink, parser, "--response-size", str(3 * MIB + 1)),
    )
    down = run2.result
    assert down["body_bytes_in"] == down["responses"] * (3 * MIB + 1)
    assert down["bytes_in"] > down["body_bytes_in"]  # heads are on the wire too
    sink.stop()
    assert sink.summary["body_bytes_in"] == up["body_bytes_out"]


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("size", [5000, MIB + 7])
def test_chunked_responses_count_their_payload_not_their_framing(
    sink_factory, tmp_path, parser, size
):
    # Today's Lightning re-frames every answer as chunked: its body bytes are
    # the payload, as with Content-Length (chansink --chunked sends them so).
    sink = sink_factory("--chunked")
    run = run_chanload(
        tmp_path,
        "--scenario",
        "large_response",
        "--channel-url",
        sink.url,
        *common(sink, parser, "--response-size", str(size), duration="1"),
    )
    assert run.code == 0, run.stderr
    r = run.result
    assert r["responses"] > 0
    assert r["unknown_body_responses"] == 0
    assert r["body_bytes_in"] == r["responses"] * size
    assert r["bytes_in"] > r["body_bytes_in"]  # heads and chunk framing are on the wire


def test_the_generator_reports_its_own_cpu(sink, tmp_path):
    run = run_chanload(
        tmp_path,
        "--scenario",
        "direct_sink",
        "--sink",
        sink.url,
        "--duration",
        "1.5",
        "--concurrency",
        "4",
    )
    assert run.code == 0, run.stderr
    cpu = run.result["generator_cpu"]
    assert cpu["processes"] == 1
    # A process with one event loop uses at most one core (and some, to send requests).
    assert 0 < cpu["cores"] == cpu["busiest_process"] <= 1.05
    assert cpu["busy"] is (cpu["busiest_process"] >= 0.9)
    assert f"Generator:   CPU {cpu['cores']:.2f} cores" in run.stdout
    assert ("may measure chanload rather than the target" in run.stdout) is cpu["busy"]


@pytest.mark.parametrize("memo", [True, False])
def test_memo_hits_are_counted_and_no_memo_turns_the_memo_off(sink_factory, tmp_path, memo):
    off = () if memo else ("--no-memo",)
    sink = sink_factory(*off)
    run = run_chanload(
        tmp_path,
        "--scenario",
        "direct_sink",
        "--sink",
        sink.url,
        *common(sink, "httptools", *off, duration="1.5"),
    )
    assert run.code == 0, run.stderr
    r = run.result
    assert r["config"]["memo"] is memo
    assert_counts_match_the_sink(run, sink)  # the same counts, parsed or not
    if memo:
        # One request in flight per connection: each read is one whole answer,
        # the same bytes as the last one within the second of its Date.
        assert r["memo_hits"] > r["responses"] / 2
        assert sink.summary["memo_hits"] > sink.summary["requests"] / 2
    else:
        assert r["memo_hits"] == 0
        assert sink.summary["memo_hits"] == 0


def test_mixed_methods_uses_all_five(sink_factory, tmp_path):
    sink = sink_factory("--access-log")
    run = run_chanload(
        tmp_path,
        "--scenario",
        "mixed_methods",
        "--channel-url",
        sink.url,
        *common(sink, "httptools", duration="1"),
    )
    assert run.code == 0, run.stderr
    sink.stop()
    methods = re.findall(r"\] (\w+) /\S* -> 200", sink.output())
    assert set(methods) >= {"GET", "POST", "PUT", "PATCH", "DELETE"}
    counts = {m: methods.count(m) for m in ("GET", "POST", "PUT", "PATCH", "DELETE")}
    assert max(counts.values()) - min(counts.values()) <= 4  # rotated evenly per VU


@pytest.mark.parametrize("parser", PARSERS)
def test_slow_sink_latencies_are_at_least_the_delay(sink, tmp_path, parser):
    run = run_chanload(
        tmp_path,
        "--scenario",
        "slow_sink",
        "--channel-url",
        sink.url,
        *common(sink, parser, "--delay", "300", duration="1.2"),
    )
    assert run.code == 0, run.stderr
    r = run.result
    assert r["responses"] >= 4
    assert r["min_us"] >= 300_000
    assert "delay=300" in r["url"]
    assert_counts_match_the_sink(run, sink)


def test_slow_sink_defaults_to_a_2s_delay(sink, tmp_path):
    run = run_chanload(
        tmp_path,
        "--scenario",
        "slow_sink",
        "--channel-url",
        sink.url,
        *common(sink, "httptools", duration="0.5", concurrency="2"),
    )
    r = run.result
    assert "delay=2000" in r["url"]
    assert r["responses"] == 2  # one each, finished after the deadline and counted
    assert r["min_us"] >= 2_000_000


@pytest.mark.parametrize("parser", PARSERS)
def test_timeouts_are_classified_and_the_run_still_ends(sink_factory, tmp_path, parser):
    sink = sink_factory("--mode", "timeout")
    run = run_chanload(
        tmp_path,
        "--scenario",
        "direct_sink",
        "--sink",
        sink.url,
        "--timeout",
        "1",
        "--no-preflight",
        *common(sink, parser, duration="1", concurrency="3"),
    )
    assert run.code == 0, run.stderr
    r = run.result
    assert r["errors"]["timeout"] == 3
    assert r["transport_errors"] == 3 and r["responses"] == 0
    assert r["error_rate"] == 100.0
    assert run.elapsed < 1 + 1 + 1 + 2  # duration + timeout (+1 s), plus process start-up


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("reset", [False, True])
def test_connections_closed_by_the_server_are_counted_and_reconnected(tmp_path, parser, reset):
    proc, port, log = start_flaky(tmp_path, "--answer", "3", *(["--reset"] if reset else []))
    try:
        run = run_chanload(
            tmp_path,
            "--scenario",
            "large_response",
            "--channel-url",
            f"http://127.0.0.1:{port}/x",
            "--no-preflight",
            "--duration",
            "1",
            "--concurrency",
            "3",
            "--parser",
            parser,
            "--quiet",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert run.code == 0, run.stderr
    r = run.result
    stats = dict(re.findall(r"(\w+)=(\d+)", log.read_text().split("flaky stopped:")[1]))
    answered, dropped = int(stats["answered"]), int(stats["dropped"])
    assert r["responses"] == answered
    assert r["errors"]["closed"] + r["errors"]["reset"] == dropped
    assert dropped >= 3
    assert int(stats["accepted"]) >= dropped  # reconnected after every drop
    assert r["total_requests"] == answered + dropped
