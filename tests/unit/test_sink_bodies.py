from __future__ import annotations

import json

import pytest

from common import bodies


@pytest.mark.parametrize("size", range(0, 1100))
def test_json_body_is_valid_json_of_exact_size(size):
    body = bodies.json_body(size)
    assert len(body) == size
    if size:
        json.loads(body)


def test_status_lines_cover_100_to_599():
    assert bodies.STATUS_LINES[200] == b"HTTP/1.1 200 OK\r\n"
    assert bodies.STATUS_LINES[599] == b"HTTP/1.1 599 \r\n"  # unknown: empty reason
    assert set(bodies.STATUS_LINES) == set(range(100, 600))


def test_heads_frame_exactly_one_way():
    head = bodies.render_head(
        200,
        date=b"D",
        content_type=bodies.JSON,
        length=5,
        chunked=False,
        keep_alive=True,
        http10=False,
    )
    assert head == (
        b"HTTP/1.1 200 OK\r\nserver: chansink\r\ndate: D\r\n"
        b"content-type: application/json\r\ncontent-length: 5\r\n\r\n"
    )
    head = bodies.render_head(
        503,
        date=b"D",
        content_type=bodies.OCTET,
        length=5,
        chunked=True,
        keep_alive=False,
        http10=False,
    )
    assert b"transfer-encoding: chunked\r\n" in head
    assert b"content-length" not in head
    assert head.endswith(b"connection: close\r\n\r\n")
    head = bodies.render_head(
        200,
        date=b"D",
        content_type=None,
        length=None,
        chunked=False,
        keep_alive=True,
        http10=True,
    )
    assert head.endswith(b"connection: keep-alive\r\n\r\n")


@pytest.mark.parametrize("status", [100, 101, 103, 199, 204, 304])
def test_statuses_without_body(status):
    assert bodies.has_no_body(status)


def test_filler_file_holds_filler():
    import os

    fd = bodies.filler_file()
    if fd is None:
        pytest.skip("no memfd_create/sendfile on this platform")
    try:
        assert os.pread(fd, 16, 0) == b"x" * 16
        assert os.fstat(fd).st_size == bodies.SENDFILE_FILLER_SIZE
    finally:
        os.close(fd)
