"""chansink against httpx, a widely used third-party client."""

from __future__ import annotations

import httpx


def test_httpx_keep_alive_uploads_and_downloads(sink):
    def chunks():
        for i in range(10):
            yield bytes([65 + i]) * 100_000

    with httpx.Client(base_url=sink.url, timeout=10) as client:
        for size in (0, 1, 1024, 1025, 5_000_000):
            r = client.get("/t", params={"response_size": size})
            assert r.status_code == 200
            assert len(r.content) == size
            assert r.headers["content-length"] == str(size)
        r = client.post("/up", content=chunks())  # a generator: sent chunked
        assert r.status_code == 200
        r = client.put("/up", content=b"z" * 12345)
        assert r.status_code == 200
        r = client.get("/t", params={"status": 418, "delay": 50})
        assert r.status_code == 418
        assert r.elapsed.total_seconds() >= 0.05
    sink.stop()
    assert sink.summary["accepted"] == 1  # one keep-alive connection for everything
    assert sink.summary["body_bytes_in"] == 1_000_000 + 12345
