"""chanproxy end to end: forwarding, errors, Server-Timing, streaming memory, admin."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time

import httpx
import pytest

from tests.support import (
    H11Client,
    admin_token,
    raw_exchange,
    read_until_closed,
    rss_bytes,
    wait_until,
)

MIB = 1024 * 1024
CHANNEL_ID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def channels_file(tmp_path, sink_url, enabled=True):
    path = tmp_path / f"channels-{enabled}.json"
    path.write_text(
        json.dumps(
            [
                {"id": CHANNEL_ID, "name": "load-test", "sink_url": sink_url, "enabled": enabled},
            ]
        )
    )
    return str(path)


@pytest.fixture
def echo_proxy(proxy_factory, echo, tmp_path):
    return proxy_factory("--channels", channels_file(tmp_path, echo + "/base/"))


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_forwards_method_path_query_and_headers(echo_proxy, method):
    body = b"x" * 1000 if method in ("POST", "PUT", "PATCH") else None
    r = H11Client(echo_proxy.port).request(
        method,
        f"/channels/{CHANNEL_ID}/deep/path/here?a=1&b=two%20words",
        headers=[
            ("X-Custom", "kept"),
            ("Authorization", "Bearer abc"),
            ("X-Request-Id", "short"),  # under 20 chars: replaced
            ("Connection", "keep-alive"),  # hop-by-hop: not forwarded
            ("X-Forwarded-For", "10.0.0.1"),
        ],
        body=body,
    )
    assert r.status == 200
    assert r.headers["x-echo"] == "yes"  # the sink's headers come back
    seen = json.loads(r.body)
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert seen["method"] == method
    assert seen["target"] == "/base/deep/path/here?a=1&b=two%20words"
    assert headers["x-custom"] == "kept"
    assert headers["authorization"] == "Bearer abc"
    assert headers["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert headers["x-forwarded-host"] == f"127.0.0.1:{echo_proxy.port}"
    assert headers["x-forwarded-proto"] == "http"
    assert 20 <= len(headers["x-request-id"]) <= 200 and headers["x-request-id"] != "short"
    assert "connection" not in headers
    assert seen["body_length"] == (len(body) if body else 0)


def test_a_valid_request_id_is_kept_and_chunked_bodies_pass(echo_proxy):
    rid = "r" * 30
    r = H11Client(echo_proxy.port).request(
        "POST",
        f"/channels/{CHANNEL_ID}/x",
        headers=[("X-Request-Id", rid)],
        chunks=[b"a" * 10, b"b" * 70000, b"c"],
    )
    seen = json.loads(r.body)
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["x-request-id"] == rid
    assert headers["transfer-encoding"] == "chunked"
    assert seen["body_length"] == 70011


def test_server_timing_on_every_response(echo_proxy):
    with H11Client(echo_proxy.port) as c:
        for _ in range(3):
            r = c.request(target=f"/channels/{CHANNEL_ID}/t")
            metrics = dict(
                (m.split(";")[0].strip(), float(m.split("dur=")[1]))
                for m in r.headers["server-timing"].split(",")
            )
            assert set(metrics) == {"lookup", "upstream", "total"}
            assert metrics["total"] >= metrics["upstream"] >= 0
            assert metrics["total"] >= metrics["lookup"] >= 0


def test_unknown_bad_or_disabled_channels_get_404(proxy_factory, sink, tmp_path):
    proxy = proxy_factory("--channels", channels_file(tmp_path, sink.url, enabled=False))
    for path in (
        f"/channels/{CHANNEL_ID}/x",
        "/channels/not-a-uuid/x",
        "/channels/00000000-0000-0000-0000-000000000000/x",
        "/elsewhere",
    ):
        r = H11Client(proxy.port).request(target=path)
        assert r.status == 404, path
        assert json.loads(r.body) == {"error": "Not Found"}


def test_dot_segments_are_resolved_and_never_climb_out_of_the_channel(
    proxy_factory, sink_factory, tmp_path
):
    sink = sink_factory("--access-log")
    proxy = proxy_factory("--channels", channels_file(tmp_path, sink.url + "/base/"))
    resolved = [
        ("a/./b/../c?x=/../..", "/base/a/c"),
        ("a/%2e%2e/d", "/base/d"),
        ("x/y/%2E", "/base/x/y/"),
        ("a/..", "/base/"),
    ]
    escaping = ["a/../../x", "%2e%2e/secret", "a/.%2E/%2E./etc/passwd?q=1", ".."]
    with H11Client(proxy.port) as c:
        for path, _ in resolved:
            assert c.request(target=f"/channels/{CHANNEL_ID}/{path}").status == 200, path
        for path in escaping:
            r = c.request("POST", f"/channels/{CHANNEL_ID}/{path}", body=b"never sent")
            assert r.status == 400, path
            assert json.loads(r.body) == {"error": "Bad Request"}
        # and the connection goes on serving
        assert c.request(target=f"/channels/{CHANNEL_ID}/ok").status == 200
    assert proxy.stop() == 0
    assert sink.stop() == 0
    seen = re.findall(r"\] (?:GET|POST) (\S+) -> ", sink.output())
    assert seen == [want for _, want in resolved] + ["/base/ok"]  # nothing else reached it
    assert sink.summary["requests"] == len(resolved) + 1 and sink.summary["body_bytes_in"] == 0
    assert proxy.summary["bad_requests"] == len(escaping)


def test_unreachable_sink_gets_502(proxy_factory, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
        proxy = proxy_factory("--channels", channels_file(tmp_path, f"http://127.0.0.1:{dead}"))
        r = H11Client(proxy.port).request("POST", f"/channels/{CHANNEL_ID}/x", body=b"abc")
    assert r.status == 502
    assert json.loads(r.body) == {"error": "Bad Gateway"}


def test_a_sink_that_never_answers_gets_504(proxy_factory, sink_factory, tmp_path):
    slow = sink_factory("--mode", "timeout")
    proxy = proxy_factory(
        "--channels", channels_file(tmp_path, slow.url), "--upstream-timeout", "0.5"
    )
    r = H11Client(proxy.port).request(target=f"/channels/{CHANNEL_ID}/x")
    assert r.status == 504
    assert json.loads(r.body) == {"error": "Gateway Timeout"}
    assert 0.5 <= r.elapsed < 3


def test_keep_alive_upstream_connections_are_pooled(proxy_factory, sink, tmp_path):
    proxy = proxy_factory("--channels", channels_file(tmp_path, sink.url))
    with H11Client(proxy.port) as c:
        for i in range(20):
            r = c.request("POST", f"/channels/{CHANNEL_ID}/t?response_size={i}", body=b"x")
            assert len(r.body) == i
    proxy.stop()
    sink.stop()
    assert proxy.summary["upstream_connections"] == 1
    assert sink.summary["accepted"] == 1
    assert proxy.summary["proxied"] == 20


def test_pipelined_requests_come_back_in_order(proxy_factory, sink, tmp_path):
    proxy = proxy_factory("--channels", channels_file(tmp_path, sink.url))
    reqs = b"".join(
        f"GET /channels/{CHANNEL_ID}/p{i}?response_size={i}&delay={(5 - i) * 50} HTTP/1.1\r\n"
        f"Host: x\r\n{'Connection: close' if i == 4 else 'X: y'}\r\n\r\n".encode()
        for i in range(5)
    )
    out = raw_exchange(proxy.port, reqs)
    bodies = [
        chunk.split(b"\r\n\r\n", 1)[1][: int(n)]
        for chunk, n in (
            (part, part.split(b"content-length: ")[1].split(b"\r\n")[0])
            for part in out.split(b"HTTP/1.1 200 OK")[1:]
        )
    ]
    assert [len(b) for b in bodies] == [0, 1, 2, 3, 4]


def test_admin_endpoint_creates_and_lists_channels(proxy_factory, sink):
    proxy = proxy_factory()
    with httpx.Client(
        base_url=f"http://127.0.0.1:{proxy.port}", headers={"x-admin-token": admin_token(proxy)}
    ) as client:
        r = client.post("/_admin/channels", json={"name": "a", "sink_url": sink.url})
        assert r.status_code == 201
        channel_id = r.json()["id"]
        listed = client.get("/_admin/channels").json()
        assert [c["id"] for c in listed] == [channel_id]
        assert client.post("/channels/" + channel_id + "/t", content=b"hi").status_code == 200
        bad = client.post("/_admin/channels", json={"name": "b", "sink_url": "ftp://x"})
        assert bad.status_code == 422 and "http://" in bad.json()["error"]
        assert client.post("/_admin/channels", content=b"{not json").status_code == 415
        bad_json = client.post(
            "/_admin/channels", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert bad_json.status_code == 400


def non_loopback_address() -> str | None:
    """An address of this machine's own that is not loopback (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only asks the routing table
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_admin_endpoint_answers_loopback_clients_only(proxy_factory, sink):
    outside = non_loopback_address()
    if outside is None:
        pytest.skip("this machine has no non-loopback address to come from")
    proxy = proxy_factory("--host", "0.0.0.0")
    r = httpx.post(
        f"http://{outside}:{proxy.port}/_admin/channels", json={"name": "x", "sink_url": sink.url}
    )
    assert r.status_code == 403
    assert "loopback" in r.json()["error"]


async def _through(
    port: int, path: str, upload: int, download: int, parallel: int, ssl=None
) -> None:
    async def one():
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, limit=4 * MIB, ssl=ssl, server_hostname="localhost" if ssl else None
        )
        writer.write(
            f"POST {path}?response_size={download} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {upload}\r\n\r\n".encode()
        )
        block = memoryview(b"u" * MIB)
        for _ in range(upload // MIB):
            writer.write(block)
            await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        left = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert left == download
        while left:
            data = await reader.read(min(left, MIB))
            assert data
            left -= len(data)
        writer.close()

    await asyncio.gather(*(one() for _ in range(parallel)))


@pytest.mark.slow
def test_streams_a_gigabyte_each_way_with_flat_memory(proxy_factory, sink, tmp_path):
    proxy = proxy_factory("--channels", channels_file(tmp_path, sink.url))
    path = f"/channels/{CHANNEL_ID}/big"
    asyncio.run(_through(proxy.port, path, MIB, MIB, 2))  # warm up
    idle = rss_bytes(proxy.pid)
    asyncio.run(asyncio.wait_for(_through(proxy.port, path, 128 * MIB, 128 * MIB, 8), 180))
    peak = rss_bytes(proxy.pid, "VmHWM")
    assert peak - idle < 16 * MIB, f"chanproxy grew by {(peak - idle) / MIB:.1f} MiB"
    sink.stop()
    assert sink.summary["body_bytes_in"] >= 1024 * MIB


@pytest.mark.slow
def test_streams_over_tls_both_ways_with_flat_memory(proxy_factory, sink_factory, tls, tmp_path):
    """Client -> chanproxy and chanproxy -> chansink both TLS: every byte decrypted
    and encrypted again in the proxy, and still nothing piles up."""
    import ssl

    sink = sink_factory(*tls.loopback())
    proxy = proxy_factory(
        "--channels",
        channels_file(tmp_path, sink.url),
        *tls.loopback(),
        "--upstream-ca-file",
        str(tls.ca_file),
    )
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    path = f"/channels/{CHANNEL_ID}/big"
    asyncio.run(_through(proxy.port, path, MIB, MIB, 2, context))  # warm up
    idle = rss_bytes(proxy.pid)
    asyncio.run(asyncio.wait_for(_through(proxy.port, path, 32 * MIB, 32 * MIB, 8, context), 180))
    peak = rss_bytes(proxy.pid, "VmHWM")
    assert peak - idle < 16 * MIB, f"chanproxy grew by {(peak - idle) / MIB:.1f} MiB"
    sink.stop()
    assert sink.summary["body_bytes_in"] >= 256 * MIB


@pytest.mark.slow
def test_the_buffer_control_grows_with_the_bodies(proxy_factory, sink, tmp_path):
    proxy = proxy_factory("--channels", channels_file(tmp_path, sink.url), "--buffer")
    path = f"/channels/{CHANNEL_ID}/big"
    asyncio.run(_through(proxy.port, path, MIB, MIB, 2))
    idle = rss_bytes(proxy.pid)
    asyncio.run(asyncio.wait_for(_through(proxy.port, path, 32 * MIB, 32 * MIB, 8), 180))
    peak = rss_bytes(proxy.pid, "VmHWM")
    assert peak - idle > 64 * MIB, f"--buffer grew only {(peak - idle) / MIB:.1f} MiB"


@pytest.mark.parametrize("to_channel", [False, True])
def test_a_request_body_that_breaks_after_its_head_gets_400_not_a_hang(
    proxy_factory, sink, tmp_path, to_channel
):
    # Found by the request fuzzer: the head routes the request (to a channel or
    # to a 404), then the chunked body is garbage. It used to wait forever.
    proxy = proxy_factory("--channels", channels_file(tmp_path, sink.url))
    path = f"/channels/{CHANNEL_ID}/x" if to_channel else "/"
    data = f"POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(data + b"\x00zz\r\n")
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b'{"error":"Bad Request"}' in answer
    # and the proxy goes on serving
    assert httpx.get(f"http://127.0.0.1:{proxy.port}/channels/{CHANNEL_ID}/ok").status_code == 200


def test_a_request_head_that_arrives_too_slowly_gets_408(proxy_factory, sink, tmp_path):
    proxy = proxy_factory("--channels", channels_file(tmp_path, sink.url), "--header-timeout", "2")
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.sendall(f"GET /channels/{CHANNEL_ID}/x HTTP/1.1\r\nhost: x\r\n".encode())
        started = time.monotonic()
        data, closed = b"", None
        while closed is None and time.monotonic() - started < 6:
            with contextlib.suppress(OSError):
                s.sendall(b"x")  # slowloris: a byte now and then, never the end
            more, closed = read_until_closed(s, 0.3)
            data += more
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data[:100]
    assert closed is not None and 1.0 <= time.monotonic() - started < 4.5


def test_an_idle_client_connection_is_closed(proxy_factory, sink, tmp_path):
    proxy = proxy_factory("--channels", channels_file(tmp_path, sink.url), "--idle-timeout", "1")
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.sendall(f"GET /channels/{CHANNEL_ID}/x HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        first = b""
        while b"\r\n\r\n" not in first:
            first += s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 OK")
        rest, closed = read_until_closed(s, 5)
    assert rest == b"" and closed is not None and closed < 3.5


def test_a_sink_that_dies_mid_stream_gives_the_client_a_cut_off_response(
    proxy_factory, sink_factory, tmp_path
):
    sink = sink_factory()
    proxy = proxy_factory("--channels", channels_file(tmp_path, sink.url))
    size = 2 * 1024 * MIB  # far more than the sockets buffer: the sink is still sending
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        target = f"/channels/{CHANNEL_ID}/big?response_size={size}"
        s.sendall(f"GET {target} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 OK")
        sink.proc.kill()  # mid-body
        data, closed = read_until_closed(s, 10)
    received = len(head.split(b"\r\n\r\n", 1)[1]) + len(data)
    assert closed is not None, "the client was left hanging"
    assert received < size  # cut off, and the client can tell (Content-Length not reached)


def test_a_client_gone_mid_upload_stops_the_upload_to_the_sink(proxy_factory, sink, tmp_path):
    proxy = proxy_factory("--channels", channels_file(tmp_path, sink.url))
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.sendall(
            f"POST /channels/{CHANNEL_ID}/up HTTP/1.1\r\nhost: x\r\ncontent-length: {100 * MIB}"
            "\r\n\r\n".encode()
        )
        s.sendall(b"x" * MIB)
        wait_until(lambda: " 1 open," in sink.output(), 10, "the upload to reach the sink")
    # the client is gone: the proxy drops its connection to the sink too

    def sink_side_closed():
        lines = [ln for ln in sink.output().splitlines() if ln.startswith("[chansink ")]
        return lines and " 0 open," in lines[-1]

    wait_until(sink_side_closed, 10, "the sink's side to close")
