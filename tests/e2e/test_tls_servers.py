"""chansink and chanproxy serving HTTPS (--tls-cert/--tls-key), chanproxy
forwarding to an https sink (--upstream-ca-file), and every scenario run
over TLS end to end with chanload verifying against the test CA."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys

import pytest

from tests.support import ROOT, run_chanload

CHANNEL_ID = "6f1c1e2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.fixture
def tls_sink(sink_factory, tls):
    return sink_factory(*tls.loopback())


@pytest.fixture
def tls_proxy(proxy_factory, tls, tls_sink, tmp_path):
    channels = tmp_path / "channels.json"
    channels.write_text(
        json.dumps([{"id": CHANNEL_ID, "name": "load-test", "sink_url": f"{tls_sink.url}/"}])
    )
    return proxy_factory(
        "--channels", str(channels), *tls.loopback(), "--upstream-ca-file", str(tls.ca_file)
    )


def test_the_servers_say_https_and_speak_tls_only(tls_sink, tls_proxy, tls):
    assert tls_sink.url.startswith("https://") and tls_proxy.url.startswith("https://")
    ctx = ssl.create_default_context(cafile=str(tls.ca_file))
    import http.client

    for server in (tls_sink, tls_proxy):
        conn = http.client.HTTPSConnection("localhost", server.port, context=ctx, timeout=10)
        path = "/test" if server is tls_sink else f"/channels/{CHANNEL_ID}/test"
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert conn.sock.selected_alpn_protocol() in (None, "http/1.1")
        response.read()
        conn.close()


SCENARIOS = {
    "direct_sink": (),
    "happy_path": (),
    "ramp_up": (),
    "large_payload": ("--payload-size", "262144"),
    "large_response": ("--response-size", "262144"),
    "mixed_methods": (),
    "slow_sink": ("--delay", "200"),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_scenario_runs_over_tls_end_to_end(tmp_path, tls, tls_sink, tls_proxy, scenario):
    run = run_chanload(
        tmp_path,
        "--scenario",
        scenario,
        "--sink",
        tls_sink.url,
        "--channel-url",
        f"{tls_proxy.url}/channels/{CHANNEL_ID}/test",
        "--ca-file",
        str(tls.ca_file),
        "--duration",
        "2",
        "--concurrency",
        "4",
        "--quiet",
        *SCENARIOS[scenario],
    )
    assert run.code == 0, run.stdout + run.stderr
    r = run.result
    assert r["responses"] > 3, r
    assert r["error_count"] == 0, (r["errors"], r["error_samples"], r["statuses"])
    assert r["url"].startswith("https://")
    conns = r["connections"]
    assert conns["tls"]["verified"] is True
    assert conns["tls_handshake"]["count"] == conns["opened"] >= 1
    if scenario == "large_response":
        assert r["body_bytes_in"] == 262144 * r["responses"]
    if scenario == "large_payload":
        assert r["body_bytes_out"] >= 262144 * r["responses"]
    tls_sink.stop()
    # Everything chanload counted reached the sink, through TLS on both legs.
    assert tls_sink.summary["responses"] == r["responses"] + r["preflight_requests"]


def test_the_proxy_verifies_its_https_sink(proxy_factory, tls_sink, tmp_path):
    """Without --upstream-ca-file the test CA is unknown: the sink is unreachable (502)."""
    channels = tmp_path / "channels.json"
    channels.write_text(
        json.dumps([{"id": CHANNEL_ID, "name": "load-test", "sink_url": f"{tls_sink.url}/"}])
    )
    proxy = proxy_factory("--channels", str(channels))
    run = run_chanload(
        tmp_path,
        "--channel-url",
        f"{proxy.url}/channels/{CHANNEL_ID}/test",
        "--no-preflight",
        "--duration",
        "1",
        "--concurrency",
        "2",
    )
    assert run.code == 0, run.stderr
    statuses = run.result["statuses"]
    assert set(statuses) == {"502"}, statuses


@pytest.mark.parametrize("program", ["chansink", "chanproxy"])
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--tls-cert", "{cert}"), "--tls-cert needs --tls-key"),
        (("--tls-key", "{key}"), "--tls-key needs --tls-cert"),
        (("--tls-cert", "/nonexistent.pem", "--tls-key", "{key}"), "no such file"),
        (("--tls-cert", "{key}", "--tls-key", "{key}"), "cannot be used"),
    ],
)
def test_bad_tls_options_are_refused_with_one_line(tls, program, args, says):
    cert, key = tls.server("options", "localhost")
    argv = [a.format(cert=cert, key=key) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", f"cli.{program}", "--port", "0", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
