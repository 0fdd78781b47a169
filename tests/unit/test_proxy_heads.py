"""chanproxy's head rewrites (proxy/heads.py) and admin answers (proxy/admin.py): pure."""

from __future__ import annotations

import json

import h11
import pytest

from proxy import admin, heads
from proxy.registry import Registry


def parse_request(head: bytes) -> h11.Request:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    event = conn.next_event()
    assert isinstance(event, h11.Request), event
    return event


def header_map(event) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for name, value in event.headers:
        out.setdefault(name, []).append(value)
    return out


@pytest.mark.parametrize(
    ("url", "sink_path", "expected"),
    [
        (b"/channels/abc/test", "", b"/test"),
        (b"/channels/abc/test?response_size=5", "/base", b"/base/test?response_size=5"),
        (b"/channels/abc", "/base", b"/base/"),
        (b"/channels/abc/a/b/c?x=1&y=2", "", b"/a/b/c?x=1&y=2"),
        (b"/channels/abc/?", "", b"/?"),
    ],
)
def test_the_path_below_the_channel_goes_under_the_sink_path(url, sink_path, expected):
    assert heads.sink_target(url, sink_path) == expected


# RFC 3986 5.2.4 on "/" + what follows the channel id; None: above the channel's root.
@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        (b"", b"/"),
        (b"a/b/c", b"/a/b/c"),
        (b"file.json/.hidden/a..b/...", b"/file.json/.hidden/a..b/..."),  # not dot segments
        (b"a/./b", b"/a/b"),
        (b"./a", b"/a"),
        (b".", b"/"),
        (b"a/.", b"/a/"),
        (b"a/b/..", b"/a/"),
        (b"a/..", b"/"),
        (b"a/../b", b"/b"),
        (b"a/b/../../c", b"/c"),
        (b"a/b/c/./../../g", b"/a/g"),  # RFC 3986 5.2.4's own examples
        (b"mid/content=5/../6", b"/mid/6"),
        (b"a//../b", b"/a/b"),  # an empty segment is a segment
        (b"a/%2e/b", b"/a/b"),
        (b"a/%2E%2e/b", b"/b"),
        (b"a/.%2e", b"/"),
        (b"a/%2e./b/", b"/b/"),
        (b"a%2fb/%2e%2e/c", b"/c"),  # %2f is not a slash: one segment, popped whole
        (b"%2e%2e%2e/x", b"/%2e%2e%2e/x"),  # three dots: a name, passed on as it came
        (b"..", None),
        (b"../x", None),
        (b"a/../..", None),
        (b"a/../../x", None),
        (b"%2e%2e/x", None),
        (b"%2E%2E", None),
        (b"a/.%2E/%2e./x", None),
        (b"./..", None),
    ],
)
def test_dot_segments_are_resolved_below_the_channel_and_never_above(rest, expected):
    assert heads.channel_path(rest) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (b"/channels/abc/a/../b?x=/../..", b"/base/b?x=/../.."),  # the query is untouched
        (b"/channels/abc/a/%2e%2e/b?", b"/base/b?"),
        (b"/channels/abc/a/../../x", None),
        (b"/channels/abc/%2e%2e/%2E%2E/etc?q=1", None),
    ],
)
def test_the_sink_target_is_the_resolved_path_or_none(url, expected):
    assert heads.sink_target(url, "/base") == expected


def test_the_request_head_replaces_hop_by_hop_host_length_and_forwarding():
    head = heads.upstream_head(
        b"POST",
        b"/sink/test?q=1",
        [
            (b"Host", b"proxy.example:4000"),
            (b"Connection", b"keep-alive"),
            (b"Content-Length", b"999"),
            (b"X-Forwarded-For", b"10.0.0.1"),
            (b"X-Forwarded-Proto", b"https"),
            (b"x-api-key", b"secret"),
            (b"Transfer-Encoding", b"chunked"),
        ],
        "127.0.0.1:4001",
        b"127.0.0.9",
        12,
        request_id=b"fixed-request-id-0123456789",
    )
    event = parse_request(head)
    h = header_map(event)
    assert event.method == b"POST" and event.target == b"/sink/test?q=1"
    assert h[b"host"] == [b"127.0.0.1:4001"]
    assert h[b"content-length"] == [b"12"]  # the body's, not the client's 999
    assert b"transfer-encoding" not in h and b"connection" not in h
    assert h[b"x-forwarded-for"] == [b"10.0.0.1, 127.0.0.9"]
    assert h[b"x-forwarded-host"] == [b"proxy.example:4000"]
    assert h[b"x-forwarded-proto"] == [b"http"]
    assert h[b"x-request-id"] == [b"fixed-request-id-0123456789"]
    assert h[b"x-api-key"] == [b"secret"]  # end-to-end headers pass


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (b"x" * 20, True),
        (b"x" * 200, True),
        (b"x" * 19, False),
        (b"x" * 201, False),
    ],
)
def test_a_client_request_id_is_kept_only_when_lightning_would(given, kept):
    head = heads.upstream_head(b"GET", b"/t", [(b"X-Request-Id", given)], "h:1", b"127.0.0.1", None)
    ids = header_map(parse_request(head))[b"x-request-id"]
    assert len(ids) == 1
    assert (ids[0] == given) is kept
    assert 20 <= len(ids[0]) <= 200


def test_forwarded_proto_says_what_the_client_spoke_to_the_proxy():
    args = (b"GET", b"/t", [(b"X-Forwarded-Proto", b"gopher")], "h:1", b"127.0.0.1", None)
    over_tls = header_map(parse_request(heads.upstream_head(*args, scheme=b"https")))
    assert over_tls[b"x-forwarded-proto"] == [b"https"]
    plain = header_map(parse_request(heads.upstream_head(*args)))
    assert plain[b"x-forwarded-proto"] == [b"http"]


def test_request_framing_is_the_callers_choice():
    args = (b"POST", b"/t", [], "h:1", b"127.0.0.1")
    chunked = header_map(parse_request(heads.upstream_head(*args, "chunked")))
    assert chunked[b"transfer-encoding"] == [b"chunked"] and b"content-length" not in chunked
    none = header_map(parse_request(heads.upstream_head(*args, None)))
    assert b"transfer-encoding" not in none and b"content-length" not in none


def test_the_response_head_drops_hop_by_hop_and_says_where_time_went():
    sink_headers = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"42"),
        (b"Connection", b"keep-alive"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Custom", b"1"),
    ]
    kept = heads.response_head_lines(200, sink_headers, True, 0.01, 1.5, 1.75)
    text = b"".join(kept)
    assert text.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 42\r\n" in text and b"X-Custom: 1\r\n" in text
    assert b"Connection" not in text and b"Keep-Alive" not in text
    assert b"server-timing: lookup;dur=0.010, upstream;dur=1.500, total;dur=1.750\r\n" in text
    dropped = b"".join(heads.response_head_lines(200, sink_headers, False, 0, 0, 0))
    assert b"Content-Length" not in dropped
    odd = b"".join(heads.response_head_lines(299, [], True, 0, 0, 0))
    assert odd.startswith(b"HTTP/1.1 299 ")


def test_local_answers_are_whole_json_responses():
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(heads.error_response(431))
    response = conn.next_event()
    assert response.status_code == 431
    assert (b"connection", b"close") in list(response.headers)
    body = conn.next_event()
    assert json.loads(body.data) == {"error": "Request Header Fields Too Large"}


def test_the_admin_endpoint_answers_loopback_only_and_validates():
    registry = Registry()
    token = "t" * 20
    ok = [(b"Host", b"127.0.0.1:4000"), (b"X-Admin-Token", token.encode())]
    json_ct = [*ok, (b"Content-Type", b"application/json; charset=utf-8")]

    def ask(method, url, headers=ok, body=b"", loopback=True):
        return admin.answer(registry, token, loopback, method, url, headers, body)

    assert ask(b"GET", b"/_admin/channels", loopback=False)[0] == 403
    rebound = [(b"Host", b"evil.example:4000"), ok[1]]  # DNS rebinding: the page's own name
    assert ask(b"GET", b"/_admin/channels", headers=rebound)[0] == 403
    assert ask(b"GET", b"/_admin/channels", headers=[ok[0]])[0] == 401
    assert ask(b"GET", b"/_admin/channels", headers=[ok[0], (b"x-admin-token", b"nope")])[0] == 401
    assert ask(b"GET", b"/_admin/other") == (404, heads.NOT_FOUND)
    assert ask(b"DELETE", b"/_admin/channels")[0] == 405
    assert ask(b"POST", b"/_admin/channels", body=b"{}")[0] == 415
    status, payload = ask(b"POST", b"/_admin/channels", json_ct, b"[1]")
    assert status == 422 and "JSON object" in payload["error"]
    assert ask(b"POST", b"/_admin/channels", json_ct, None)[0] == 413
    assert ask(b"POST", b"/_admin/channels", json_ct, b"[" * 100_000)[0] == 400
    for bad in ({"name": "a", "sink_url": "http://127.0.0.1:1", "id": 7},
                {"name": 1, "sink_url": "http://127.0.0.1:1"},
                {"name": "a", "sink_url": "http://127.0.0.1:1/a b"},
                {"name": "a", "sink_url": "ftp://127.0.0.1:1"},
                {"name": "a", "sink_url": "http://127.0.0.1:1", "enabled": "yes"}):  # fmt: skip
        assert ask(b"POST", b"/_admin/channels", json_ct, json.dumps(bad).encode())[0] == 422, bad
    body = json.dumps({"name": "a", "sink_url": "http://127.0.0.1:4001"}).encode()
    status, created = ask(b"POST", b"/_admin/channels?x=1", json_ct, body)
    assert status == 201 and created["name"] == "a"
    again = json.dumps({"name": "b", "sink_url": "http://10.0.0.1", "id": created["id"]}).encode()
    assert ask(b"POST", b"/_admin/channels", json_ct, again)[0] == 409
    status, listed = ask(b"GET", b"/_admin/channels")
    assert status == 200 and [(c["id"], c["name"]) for c in listed] == [(created["id"], "a")]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [(b"localhost", True), (b"localhost:4000", True), (b"127.0.0.1", True), (b"127.1.2.3:9", True),
     (b"[::1]:4000", True), (b"::1", True), (b"evil.example", False), (b"127.0.0.1.nip.io", False),
     (b"10.0.0.1:4000", False), (b"", False), (b"[::1", False)],
)  # fmt: skip
def test_loopback_hosts(host, loopback):
    assert admin.loopback_host(host) is loopback
