"""-H/--header on every target, 4xx counted as failures, the preflight's refusals.

Real chansink and chanproxy children on loopback; Lightning's own refusals
(egress 403, client auth 401) are tested against the stand-in in tests/beam.
"""

from __future__ import annotations

import csv
import json
import subprocess
import time

from tests.support import ROOT, chanload_command, run_chanload

CHANNEL_ID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
AUTH = "Authorization: Bearer test-api-key"  # what chansink --mode auth accepts


def proxy_to(proxy_factory, tmp_path, sink_url: str):
    path = tmp_path / "channels.json"
    path.write_text(json.dumps([{"id": CHANNEL_ID, "name": "load-test", "sink_url": sink_url}]))
    return proxy_factory("--channels", str(path))


def test_a_header_goes_with_every_request_direct_and_through_a_proxy(
    sink_factory, proxy_factory, tmp_path
):
    sink = sink_factory("--mode", "auth")  # 401 without Authorization, 403 when wrong
    direct = run_chanload(
        tmp_path, "--scenario", "direct_sink", "--sink", sink.url, "--duration", "1",
        "--concurrency", "2", "--quiet", "-H", AUTH,
    )  # fmt: skip
    assert direct.code == 0, direct.stderr
    r = direct.result
    assert r["statuses"] == {"200": r["total_requests"]} and r["total_requests"] > 20
    assert r["error_count"] == 0
    proxy = proxy_to(proxy_factory, tmp_path, sink.url)
    url = f"{proxy.url}/channels/{CHANNEL_ID}/test"
    proxied = run_chanload(
        tmp_path, "--scenario", "mixed_methods", "--channel-url", url, "--duration", "1",
        "--concurrency", "2", "--quiet", "--header", AUTH, "-H", "X-Trace: on",
    )  # fmt: skip
    assert proxied.code == 0, proxied.stderr
    r = proxied.result
    assert r["statuses"] == {"200": r["total_requests"]} and r["error_count"] == 0
    # The credential is never shown: banner, command line, JSON.
    for run in (direct, proxied):
        assert "test-api-key" not in run.stdout + run.stderr + json.dumps(run.result)
    assert "Header:      Authorization: ***" in proxied.stdout
    assert "Header:      X-Trace: on" in proxied.stdout
    assert r["config"]["headers"] == ["Authorization: ***", "X-Trace: on"]


def test_4xx_answers_are_failed_requests_unless_expected(sink_factory, tmp_path):
    sink = sink_factory("--status", "404")  # every answer is a 404
    out_csv = tmp_path / "r.csv"
    common = (
        "--scenario", "direct_sink", "--sink", sink.url, "--duration", "1",
        "--concurrency", "2", "--quiet", "--csv", str(out_csv),
    )  # fmt: skip
    failing = run_chanload(tmp_path, *common)
    assert failing.code == 0, failing.stderr
    r = failing.result
    n = r["total_requests"]
    assert r["statuses"] == {"404": n} and n > 20
    assert r["error_count"] == n and r["error_rate"] == 100.0
    assert (r["failed_4xx"], r["failed_5xx"], r["transport_errors"]) == (n, 0, 0)
    assert f"Errors:      {n} (100.0%)  [transport 0, 4xx {n}, 5xx 0]" in failing.stdout

    expected = run_chanload(tmp_path, *common, "--expect-status", "200-299,404")
    assert expected.code == 0, expected.stderr
    r = expected.result
    assert r["error_count"] == 0 and r["statuses"] == {"404": r["total_requests"]}
    assert r["expect_status"] == "200-299,404"
    assert "successes: 200-299,404" in expected.stdout
    rows = list(csv.DictReader(out_csv.open()))
    assert [int(row["failed_4xx"]) for row in rows] == [n, 0]
    assert [row["expect_status"] for row in rows] == ["200-399", "200-299,404"]
    assert rows[0]["error_count"] == str(n)  # the seed's column, under its name


def chanload(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    out = subprocess.run(
        chanload_command("run", *args), capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    return out, time.monotonic() - started


def test_the_preflight_explains_a_401_and_names_the_header_to_pass(
    sink_factory, proxy_factory, tmp_path
):
    sink = sink_factory("--mode", "auth")
    proxy = proxy_to(proxy_factory, tmp_path, sink.url)
    url = f"{proxy.url}/channels/{CHANNEL_ID}/test"
    out, elapsed = chanload("--channel-url", url, "--duration", "5")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "wants client authentication (401)" in out.stderr
    assert "--header 'x-api-key: KEY'" in out.stderr
    assert "Starting load test" not in out.stdout  # no load was sent
    assert elapsed < 5  # the refusal, not the duration


def test_the_preflight_explains_an_unknown_channel(sink, proxy_factory, tmp_path):
    proxy = proxy_to(proxy_factory, tmp_path, sink.url)
    url = f"{proxy.url}/channels/00000000-0000-4000-8000-000000000000/test"
    out, _ = chanload("--channel-url", url, "--duration", "5")
    assert out.returncode == 1
    assert "no such channel (404)" in out.stderr and "Not Found" in out.stderr
    assert "unknown or disabled" in out.stderr


def test_bad_headers_are_usage_errors_before_any_traffic(sink):
    for header, why in (
        ("Host: elsewhere", "sets Host itself"),
        ("X-Evil: a\r\nX-Injected: b", "CR, LF or NUL"),
        ("Content-Length: 1", "sets Content-Length itself"),
    ):
        out, _ = chanload("--scenario", "direct_sink", "--sink", sink.url, "-H", header)
        assert out.returncode == 2, out.stderr
        assert why in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1  # one line
        assert "Checking" not in out.stdout


def test_todays_vocabulary_destination_and_direct_destination(sink, tmp_path):
    run = run_chanload(
        tmp_path, "--scenario", "direct_destination", "--destination", sink.url,
        "--duration", "1", "--concurrency", "1", "--quiet",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert run.result["scenario"] == "direct_sink"
    assert run.result["url"] == f"{sink.url}/test"
    assert run.result["error_count"] == 0
