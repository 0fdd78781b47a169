"""chansink's command line: help, option errors, port conflicts, logs, signals."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading

import pytest

from tests.support import ROOT, H11Client, chansink_command, get, wait_until


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        chansink_command(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_help_explains_modes_and_overrides():
    out = run("--help")
    assert out.returncode == 0
    for word in (
        "fixed",
        "timeout",
        "auth",
        "mixed",
        "response_size",
        "delay",
        "status",
        "--body-size",
        "--access-log",
    ):
        assert word in out.stdout


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--mode", "bogus"], ["--mode", "fixed", "timeout", "auth", "mixed"]),
        (["--status", "700"], ["--status"]),
        (["--status", "abc"], ["--status"]),
        (["--body-size", "-1"], ["--body-size"]),
        (["--port", "70000"], ["--port"]),
        (["--no-such-option"], ["--no-such-option"]),
    ],
)
def test_invalid_options_exit_2_with_one_line(args, names):
    out = run(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("chansink: error:")
    for name in names:
        assert name in lines[0]
    assert out.stdout == ""


def test_port_in_use_exits_1_and_says_so():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = run("--port", str(port))
    assert out.returncode == 1
    assert f"port {port}" in out.stderr
    assert "already in use" in out.stderr


def test_version():
    out = run("--version")
    assert out.returncode == 0
    assert re.fullmatch(r"chansink \d+\.\d+\.\d+\n", out.stdout)


def test_banner_and_per_second_summary(sink):
    text = sink.output()
    assert "Mode:      fixed" in text
    assert "Body size: 256 bytes" in text
    get(sink.port)
    line = wait_until(
        lambda: re.search(
            r"\[chansink [\d:]+\] \d+ req/s, in .*, out .*, \d+ open, 1 requests", sink.output()
        ),
        5,
        "a summary line",
    )
    assert line


def test_access_log_has_one_line_per_request_in_the_seed_format(sink_factory):
    sink = sink_factory("--access-log")
    get(sink.port, "/a/b?delay=120", method="POST", body=b"x")
    get(sink.port, "/c?status=503")
    sink.stop()
    lines = re.findall(
        r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\] (\w+) (\S+) -> (\d+) \((\d+)ms\)$",
        sink.output(),
        re.M,
    )
    assert [(m, p, s) for m, p, s, _ in lines] == [("POST", "/a/b", "200"), ("GET", "/c", "503")]
    assert int(lines[0][3]) >= 120


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_lets_in_flight_requests_finish_then_exits_0(sink, sig):
    idle = H11Client(sink.port)  # an idle keep-alive connection must not hold up shutdown
    result = {}
    try:
        assert idle.request().status == 200
        t = threading.Thread(target=lambda: result.update(r=get(sink.port, "/slow?delay=3000")))
        t.start()
        wait_until(lambda: _requests_seen(sink) >= 2, 5, "the slow request to arrive")
        code = sink.stop(sig)
        t.join(10)
    finally:
        idle.close()
    assert code == 0
    assert result["r"].status == 200
    assert result["r"].elapsed >= 3.0
    assert sink.summary["responses"] == 2


def _requests_seen(sink) -> int:
    counts = re.findall(r", (\d+) requests", sink.output())
    return int(counts[-1]) if counts else 0


def test_second_signal_stops_at_once(sink_factory):
    sink = sink_factory("--mode", "timeout", "--grace", "30")
    with socket.create_connection(("127.0.0.1", sink.port)) as s:
        s.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n")  # a request that never completes
        wait_until(lambda: "1 open" in sink.output(), 5, "the connection to be seen")
        sink.proc.send_signal(signal.SIGINT)
        sink.proc.send_signal(signal.SIGINT)
        assert sink.stop(timeout=5) == 0


def test_non_loopback_bind_warns(sink_factory):
    sink = sink_factory("--host", "0.0.0.0")
    wait_until(lambda: "not a loopback address" in sink.errors(), 5, "the warning")
    assert get(sink.port).status == 200
