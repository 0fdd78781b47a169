"""Per-request query overrides: response_size, delay, status, chunked; combined and invalid."""

from __future__ import annotations

import json

import pytest

from tests.support import H11Client, get

MB5 = 5 * 1000 * 1000


@pytest.mark.parametrize("size", [0, 1, 2, 3, 40, 1023, 1024, 1025, 65536, 1048576, MB5])
def test_response_size_is_exact(sink, size):
    r = get(sink.port, f"/test?response_size={size}")
    assert r.status == 200
    assert len(r.body) == size
    assert int(r.headers["content-length"]) == size
    if size <= 1024:
        assert r.headers["content-type"] == "application/json"
        if size:
            json.loads(r.body)  # a valid JSON document of exactly that size
    else:
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.body == b"x" * size


@pytest.mark.parametrize("sendfile", ["--sendfile", "--no-sendfile"])
def test_large_bodies_are_exact_with_and_without_sendfile(sink_factory, sendfile):
    sink = sink_factory(sendfile)
    with H11Client(sink.port) as c:
        for size in (1025, 1048576 + 7, MB5, 2000):
            r = c.request(target=f"/t?response_size={size}")
            assert r.body == b"x" * size


@pytest.mark.parametrize("size", [0, 10, 1024, 1025, 300_000])
def test_chunked_bodies_decode_to_the_exact_size(sink, size):
    r = get(sink.port, f"/t?response_size={size}&chunked=1")
    assert r.status == 200
    assert len(r.body) == size
    if size:
        assert r.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in r.headers


def test_chunked_option_and_per_request_opt_out(sink_factory):
    sink = sink_factory("--chunked", "--body-size", "5000")
    r = get(sink.port)
    assert r.headers.get("transfer-encoding") == "chunked"
    assert len(r.body) == 5000
    r = get(sink.port, "/t?chunked=0")
    assert r.headers.get("content-length") == "5000"
    assert len(r.body) == 5000


def test_delay_holds_the_answer(sink):
    r = get(sink.port, "/test?delay=300")
    assert r.status == 200
    assert r.elapsed >= 0.3


@pytest.mark.parametrize("status", [200, 201, 302, 404, 418, 500, 503, 599])
def test_status_override(sink, status):
    r = get(sink.port, f"/test?status={status}")
    assert r.status == status
    assert len(r.body) == 256


@pytest.mark.parametrize("status", [204, 304])
def test_statuses_without_content_carry_no_body(sink, status):
    r = get(sink.port, f"/test?status={status}&response_size=5000")
    assert r.status == status
    assert r.body == b""
    assert "content-length" not in r.headers


def test_all_overrides_combined(sink):
    r = get(sink.port, "/x/y?status=503&response_size=2048&delay=250&other=1")
    assert r.status == 503
    assert len(r.body) == 2048
    assert r.elapsed >= 0.25


@pytest.mark.parametrize(
    "query",
    [
        "response_size=-1",
        "response_size=abc",
        "response_size=12abc",
        "response_size=",
        "delay=-5",
        "delay=1.5",
        "delay=abc",
        "status=99",
        "status=600",
        "status=abc",
        "status=",
    ],
)
def test_invalid_values_are_ignored(sink, query):
    r = get(sink.port, f"/test?{query}")
    assert r.status == 200
    assert len(r.body) == 256
    assert r.elapsed < 1.0


def test_last_valid_repeated_parameter_wins(sink):
    r = get(sink.port, "/test?response_size=10&response_size=20&response_size=bad")
    assert len(r.body) == 20


def test_head_gets_the_length_without_the_body(sink):
    for size in (100, 5000):
        r = get(sink.port, f"/test?response_size={size}", method="HEAD")
        assert r.status == 200
        assert r.headers["content-length"] == str(size)
        assert r.body == b""
