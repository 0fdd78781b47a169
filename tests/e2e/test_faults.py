"""chanload against targets that misbehave: it never crashes or hangs, ends on time,
and puts each failure in its kind.

The scripted faults come from tests/servers/misbehave.py (raw TCP); freezing,
killing and restarting use a real chansink. Every run: --duration 2 --timeout
1, so "on time" is duration + timeout + 1 s of load (the process start and the
report come on top and are bounded separately).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest

from tests.support import run_chanload, start_sink, start_test_server

DURATION, TIMEOUT = 2.0, 1.0
# The run itself (load start to load end, from the JSON's epochs).
RUN_BOUND = DURATION + TIMEOUT + 1.0
# The whole process: the run, plus interpreter start-up, preflight and report.
PROCESS_BOUND = RUN_BOUND + 8.0


def start_misbehaving(tmp_path, fault: str) -> tuple[subprocess.Popen, int]:
    proc, port, _ = start_test_server(tmp_path, "misbehave", "--fault", fault)
    return proc, port


def load(tmp_path, url: str, *extra: str, scenario: str = "happy_path"):
    run = run_chanload(
        tmp_path,
        "--scenario", scenario, "--channel-url", url, "--sink", url.rsplit("/", 1)[0],
        "--duration", str(DURATION), "--timeout", str(TIMEOUT), "--concurrency", "4",
        "--no-preflight", *extra,
        timeout=PROCESS_BOUND + 20,
    )  # fmt: skip
    assert run.code == 0, run.stderr + run.stdout[-2000:]
    assert "Traceback" not in run.stderr + run.stdout
    r = run.result
    took = r["duration_s"]
    assert took <= RUN_BOUND, f"the load took {took}s"
    assert run.elapsed <= PROCESS_BOUND, f"the process took {run.elapsed:.1f}s"
    return r


def kinds(r: dict) -> set[str]:
    return {k for k, n in r["errors"].items() if n}


# fault -> the error kinds it must produce (and no others)
CASES = {
    "ok": set(),
    "reset": {"reset"},
    "close_before_response": {"closed"},
    "close_after_headers": {"closed"},
    "truncated_body": {"closed"},
    "short_content_length": {"protocol"},
    "long_content_length": {"timeout"},
    "bad_status_line": {"protocol"},
    "garbage": {"protocol"},
    "endless_chunked": {"timeout"},
    "endless_headers": {"protocol"},
    "never_answer": {"timeout"},
    "timing_names": set(),
}


@pytest.mark.parametrize("parser", ["httptools", "h11"])
@pytest.mark.parametrize("fault", list(CASES))
def test_scripted_faults_are_classified_and_the_run_ends_on_time(tmp_path, fault, parser):
    proc, port = start_misbehaving(tmp_path, fault)
    try:
        r = load(tmp_path, f"http://127.0.0.1:{port}/x", "--parser", parser)
    finally:
        proc.terminate()
        proc.wait(10)
    assert kinds(r) == CASES[fault], r["error_samples"]
    if CASES[fault]:
        assert r["transport_errors"] > 0
    else:
        assert r["statuses"] == {"200": r["total_requests"]} and r["total_requests"] > 100


def test_an_answer_before_the_upload_is_read_is_a_response_or_a_reset(tmp_path):
    proc, port = start_misbehaving(tmp_path, "early_response")
    try:
        r = load(tmp_path, f"http://127.0.0.1:{port}/x", scenario="large_payload")
    finally:
        proc.terminate()
        proc.wait(10)
    # Each request got the 413 or lost its connection: nothing else, nothing lost.
    assert set(r["statuses"]) <= {"413"}
    assert kinds(r) <= {"reset", "closed"}
    assert r["total_requests"] > 0
    assert r["statuses"].get("413", 0) + r["transport_errors"] == r["total_requests"]


def test_a_frozen_sink_times_out_then_recovers(sink, tmp_path):
    """SIGSTOP for 1.5 s mid-run: the requests in flight time out; then traffic resumes."""

    def freeze():
        sink.proc.send_signal(signal.SIGSTOP)
        time.sleep(1.5)
        sink.proc.send_signal(signal.SIGCONT)

    timer = threading.Timer(0.5, freeze)
    timer.start()
    try:
        r = load(tmp_path, sink.url + "/x", "--duration", "3")
    finally:
        timer.join()
    assert kinds(r) == {"timeout"}
    assert r["errors"]["timeout"] <= 4  # one per VU in flight at the freeze
    late = [s for s in r["series"] if s["t"] > 2.5]
    assert late and late[0]["requests"] > 0  # answered again after SIGCONT


def test_a_killed_sink_gives_connect_errors_and_a_restarted_one_is_used_again(tmp_path):
    sink = start_sink(tmp_path)
    port = sink.port

    def kill_then_restart():
        sink.proc.kill()
        sink.proc.wait()
        time.sleep(0.5)
        restarted.append(start_sink(tmp_path, port=port))

    restarted: list = []
    timer = threading.Timer(0.7, kill_then_restart)
    timer.start()
    try:
        r = load(tmp_path, f"http://127.0.0.1:{port}/x", "--duration", "3")
    finally:
        timer.join()
        for s in restarted:
            s.stop()
    assert restarted, "the sink was not restarted"
    assert kinds(r) <= {"connect", "closed", "reset"} and "connect" in kinds(r)
    # traffic before the kill and after the restart
    assert r["series"][0]["requests"] > 0
    assert r["series"][-1]["requests"] > 0 or r["series"][-2]["requests"] > 0


def test_server_timing_keeps_sixteen_metric_names_and_counts_the_rest(tmp_path):
    # Each response names a new metric beside "total": chanload keeps "total"
    # and the first 15 others, and counts every later value as ignored.
    proc, port = start_misbehaving(tmp_path, "timing_names")
    try:
        url = f"http://127.0.0.1:{port}/x"
        run = run_chanload(
            tmp_path, "--scenario", "happy_path", "--channel-url", url,
            "--sink", url.rsplit("/", 1)[0], "--duration", "1", "--concurrency", "2",
        )  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)
    assert run.code == 0, run.stderr + run.stdout[-2000:]
    r = run.result
    timing = r["server_timing"]
    assert len(timing["events"]) == 16
    assert timing["events"]["request"]["count"] == r["responses"]  # "total" is always kept
    assert timing["ignored"] == r["responses"] - 15
    assert f"Ignored: {timing['ignored']} metric values" in run.stdout
