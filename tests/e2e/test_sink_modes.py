"""chansink's four modes, over real sockets, against a chansink child process."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time

import pytest

from tests.support import H11Client, get, wait_until


def test_fixed_mode_defaults_match_the_seed(sink):
    r = get(sink.port)
    assert r.status == 200
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == 256 == len(r.body)
    assert json.loads(r.body)["ok"] is True


def test_fixed_mode_status_and_body_size_options(sink_factory):
    sink = sink_factory("--status", "201", "--body-size", "5000")
    r = get(sink.port, "/any/path", method="PUT", body=b"x")
    assert r.status == 201
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.body == b"x" * 5000


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_any_method_and_path_is_answered(sink, method):
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    r = get(sink.port, "/channels/abc/deep/path?x=1", method=method, body=body)
    assert r.status == 200
    assert len(r.body) == 256


def test_timeout_mode_reads_but_never_answers_and_holds_the_connection(sink_factory):
    sink = sink_factory("--mode", "timeout")
    with socket.create_connection(("127.0.0.1", sink.port), timeout=1.0) as s:
        s.sendall(b"POST /test HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        s.sendall(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(TimeoutError):
            s.recv(1)  # no answer, and no close either (a close would return b"")
        # Still held open: the sink has counted both requests and one open connection.
        sink.stop()
    assert sink.summary["requests"] == 2
    assert sink.summary["responses"] == 0
    assert sink.summary["body_bytes_in"] == 5


def test_auth_mode(sink_factory):
    sink = sink_factory("--mode", "auth")
    with H11Client(sink.port) as c:
        r = c.request()
        assert r.status == 401
        assert json.loads(r.body) == {"error": "missing authorization header"}
        r = c.request(headers=[("Authorization", "Bearer wrong-key")])
        assert r.status == 403
        assert json.loads(r.body) == {"error": "invalid credentials"}
        r = c.request(headers=[("Authorization", "Bearer test-api-key")])
        assert r.status == 200
        assert len(r.body) == 256
        r = c.request(headers=[("Authorization", "bearer test-api-key")])
        assert r.status == 403  # the token is compared exactly
        r = c.request(
            headers=[("Authorization", "Bearer test-api-key"), ("Authorization", "Bearer x")]
        )
        assert r.status == 400
        assert json.loads(r.body) == {"error": "invalid authorization header"}


def test_auth_mode_honours_size_and_delay_on_success(sink_factory):
    sink = sink_factory("--mode", "auth")
    r = get(
        sink.port,
        "/t?response_size=3000&delay=200",
        headers=[("Authorization", "Bearer test-api-key")],
    )
    assert r.status == 200
    assert len(r.body) == 3000
    assert r.elapsed >= 0.2


def test_mixed_mode_proportions_and_slow_answers(sink_factory):
    sink = sink_factory("--mode", "mixed", "--seed", "7")
    conns, per_conn = 100, 6

    def worker(_):
        out = []
        with H11Client(sink.port, timeout=20) as c:
            for _ in range(per_conn):
                r = c.request()
                out.append((r.status, r.elapsed))
        return out

    with concurrent.futures.ThreadPoolExecutor(conns) as pool:
        results = [x for chunk in pool.map(worker, range(conns)) for x in chunk]
    total = len(results)
    fast_ok = sum(1 for s, t in results if s == 200 and t < 1.5)
    slow_ok = sum(1 for s, t in results if s == 200 and t >= 2.0)
    unavailable = sum(1 for s, _ in results if s == 503)
    assert fast_ok + slow_ok + unavailable == total
    assert 0.74 <= fast_ok / total <= 0.86
    assert 0.05 <= slow_ok / total <= 0.15
    assert 0.05 <= unavailable / total <= 0.15


def test_delay_does_not_block_other_connections(sink):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(get, sink.port, "/slow?delay=1500")
        wait_until(lambda: True)  # the slow request is on its way
        started = time.monotonic()
        fast = get(sink.port, "/fast")
        fast_elapsed = time.monotonic() - started
        assert fast.status == 200
        assert fast_elapsed < 1.0
        assert not slow.done()
        assert slow.result(timeout=10).elapsed >= 1.5
