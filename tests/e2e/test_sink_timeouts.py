"""chansink against slow clients: header and idle timeouts, and thousands of idle connections."""

from __future__ import annotations

import resource
import socket
import time

from tests.support import read_until_closed, run_chanload, wait_until


def test_a_request_that_arrives_too_slowly_gets_408_and_is_closed(sink_factory):
    # Checked once a second against a clock refreshed once a second: the
    # timeout acts within a second either side of its value.
    sink = sink_factory("--header-timeout", "2")
    with socket.create_connection(("127.0.0.1", sink.port)) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n")
        started = time.monotonic()
        closed = None
        data = b""
        # slowloris: a header byte every 0.2 s, never the end of the head
        while time.monotonic() - started < 6 and closed is None:
            try:
                s.sendall(b"x")
            except OSError:
                break
            more, closed = read_until_closed(s, 0.2)
            data += more
        if closed is None:
            more, closed = read_until_closed(s, 2)
            data += more
        took = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data[:100]
    assert closed is not None and 1.0 <= took < 4.5
    assert sink.stop() == 0
    assert sink.summary["timed_out"] == 1


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(sink_factory):
    sink = sink_factory("--idle-timeout", "1")
    with socket.create_connection(("127.0.0.1", sink.port)) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 OK")
        data, closed = read_until_closed(s, 5)
    assert data == b"" and closed is not None and closed < 3.5


def test_a_busy_connection_is_not_idle(sink_factory):
    sink = sink_factory("--idle-timeout", "1")
    with socket.create_connection(("127.0.0.1", sink.port), timeout=2) as s:
        for _ in range(8):  # 3.2 s of a request every 0.4 s: never idle for 1 s
            s.sendall(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")
            time.sleep(0.4)
    assert sink.stop() == 0
    assert sink.summary["timed_out"] == 0


def test_timeout_mode_holds_its_connections_past_the_idle_timeout(sink_factory):
    sink = sink_factory("--mode", "timeout", "--idle-timeout", "1")
    with socket.create_connection(("127.0.0.1", sink.port)) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
        data, closed = read_until_closed(s, 3)
    assert data == b"" and closed is None  # still held after 3 s


def test_thousands_of_idle_connections_are_held_while_others_work(sink, tmp_path):
    idle = 5000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < idle + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, idle + 1000), hard))
    socks = []
    try:
        for _ in range(idle):
            socks.append(socket.create_connection(("127.0.0.1", sink.port)))
        wait_until(lambda: f" {idle} open," in sink.output(), 20, "chansink to hold them all")
        run = run_chanload(
            tmp_path, "--scenario", "direct_sink", "--sink", sink.url, "--concurrency", "10",
            "--duration", "2",
        )  # fmt: skip
        assert run.code == 0, run.stderr
        assert run.result["error_count"] == 0 and run.result["total_requests"] > 1000
        # the idle ones are all still open (default idle timeout: 75 s)
        wait_until(lambda: f" {idle} open," in sink.output().rsplit("\n", 3)[-2], 5, "idle ones")
    finally:
        for s in socks:
            s.close()
