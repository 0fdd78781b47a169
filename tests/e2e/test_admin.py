"""chanproxy's admin endpoint against what can reach a loopback port (issue 15, item 2):
a web page in a local browser (a text/plain POST without a preflight, a
rebound DNS name), a caller without the token, bad and hostile bodies. Every
one gets a 4xx on a connection that stays usable, and no channel changes."""

from __future__ import annotations

import http.client
import json
import os

from tests.support import admin_token, start_sink

GOOD_ID = "6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def ask(conn, method, body=b"", headers=None, host=None):
    """One request on ``conn`` (kept open): (status, JSON payload, still open)."""
    conn.putrequest(method, "/_admin/channels", skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host or f"127.0.0.1:{conn.port}")
    for name, value in (headers or {}).items():
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    response = conn.getresponse()
    payload = json.loads(response.read())
    return response.status, payload, not response.will_close


def test_hostile_and_bad_admin_requests_get_4xx_and_change_nothing(tmp_path):
    sink = start_sink(tmp_path)
    proxy = start_sink(tmp_path, program="chanproxy")
    token = admin_token(proxy)
    auth = {"X-Admin-Token": token, "Content-Type": "application/json"}
    good = json.dumps({"name": "a", "sink_url": sink.url, "id": GOOD_ID}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        status, created, open_ = ask(conn, "POST", good, auth)
        assert (status, created["id"], open_) == (201, GOOD_ID, True)
        bad = {
            # What a page can send from a browser without a CORS preflight.
            "browser text/plain": (
                401, good, {"Content-Type": "text/plain", "Origin": "http://evil.example"}, None,
            ),
            "text/plain with the token": (415, good, {**auth, "Content-Type": "text/plain"}, None),
            "DNS rebinding": (403, good, auth, f"evil.example:{proxy.port}"),
            "no token": (401, good, {"Content-Type": "application/json"}, None),
            "wrong token": (401, good, {**auth, "X-Admin-Token": "x" * len(token)}, None),
            "overwrite": (
                409, json.dumps({"name": "b", "sink_url": "http://169.254.169.254", "id": GOOD_ID}
                ).encode(), auth, None,
            ),
            "id not a string": (
                422, json.dumps({"name": "b", "sink_url": sink.url, "id": 5}).encode(), auth, None,
            ),
            "spaces in sink_url": (
                422, json.dumps({"name": "b", "sink_url": sink.url + "/a b"}).encode(), auth, None,
            ),
            "nested deep": (400, b"[" * 20_000 + b"]" * 20_000, auth, None),
            "not JSON": (400, b"\xff\xfe{", auth, None),
            "too large": (413, b" " * (70 * 1024), auth, None),
        }  # fmt: skip
        for what, (want, body, headers, host) in bad.items():
            status, payload, open_ = ask(conn, "POST", body, headers, host)
            assert status == want, (what, status, payload)
            assert "error" in payload, what
            assert open_, f"{what}: the connection was closed"
        status, listed, _ = ask(conn, "GET", headers={"X-Admin-Token": token})
        assert status == 200
        assert [(c["id"], c["name"], c["sink_url"]) for c in listed] == [(GOOD_ID, "a", sink.url)]
    finally:
        conn.close()
        proxy.stop()
        sink.stop()


def test_a_token_given_by_the_environment_is_required_and_not_printed(tmp_path):
    token = "given-token-" + os.urandom(8).hex()
    os.environ["CHANPROXY_ADMIN_TOKEN"] = token
    try:
        proxy = start_sink(tmp_path, program="chanproxy")
    finally:
        del os.environ["CHANPROXY_ADMIN_TOKEN"]
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        assert token not in proxy.output()
        assert "from --admin-token" in proxy.output()
        assert ask(conn, "GET", headers={"X-Admin-Token": token})[0] == 200
        assert ask(conn, "GET", headers={"X-Admin-Token": token[:-1] + "?"})[0] == 401
    finally:
        conn.close()
        proxy.stop()


def test_a_short_admin_token_is_refused_at_start(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "cli.chanproxy", "--port", "0", "--admin-token", "short"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--admin-token must be 16 or more" in out.stderr
