"""-H/--header, --expect-status, today's vocabulary: configuration and counting."""

from __future__ import annotations

import h11
import pytest

from engine.config import ConfigError, RunConfig, masked_argv, parse_header
from engine.http.http1 import build_request_head
from engine.measure.metrics import Recorder
from engine.measure.result import CSV_COLUMNS, RunResult
from engine.measure.statuses import DEFAULT, parse_expect


def build(rec: Recorder) -> RunResult:
    return RunResult.build(
        recorder=rec,
        elapsed=1.0,
        started=0.0,
        ended=1.0,
        scenario="happy_path",
        concurrency=1,
        url="http://x/",
        target_kind="url",
        parser="httptools",
        command="chanload run",
        config={},
    )


def test_headers_parse_and_keep_their_spelling():
    assert parse_header("X-Api-Key: abc ") == ("X-Api-Key", "abc")
    assert parse_header("x-empty:") == ("x-empty", "")
    assert parse_header("Authorization: Basic dTpw") == ("Authorization", "Basic dTpw")


@pytest.mark.parametrize(
    "line, why",
    [
        ("no colon here", "expected 'Name: value'"),
        (": value", "expected 'Name: value'"),
        ("X-A: b\r\nX-Injected: 1", "CR, LF or NUL"),
        ("X-A\n: b", "CR, LF or NUL"),
        ("Bad Name: b", "not a valid header name"),
        ("Host: other", "sets Host itself"),
        ("content-length: 5", "sets content-length itself"),
        ("Transfer-Encoding: chunked", "sets Transfer-Encoding itself"),
        ("X-A: caf\u00e9", "printable ASCII"),
        ("X-A: a\x01b", "printable ASCII"),
    ],
)
def test_bad_headers_are_refused_with_a_reason(line, why):
    with pytest.raises(ValueError, match="--header") as err:
        parse_header(line)
    assert why in str(err.value)


def test_every_bad_header_and_status_spec_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        RunConfig(headers=("Host: x", "X-Ok: 1", "a\rb: c"), expect_status="200-99")
    problems = err.value.problems
    assert sum("--header" in p for p in problems) == 2
    assert any("--expect-status" in p for p in problems)


def test_user_headers_go_on_every_request_and_replace_our_defaults():
    head = build_request_head(
        "POST",
        "h:1",
        "/t",
        5,
        extra_headers=[("X-Api-Key", "k"), ("Content-Type", "text/plain"), ("User-Agent", "me")],
    )
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    request = conn.next_event()
    headers = [(n.decode(), v.decode()) for n, v in request.headers]
    assert ("x-api-key", "k") in headers
    assert [v for n, v in headers if n == "content-type"] == ["text/plain"]
    assert [v for n, v in headers if n == "user-agent"] == ["me"]
    assert [v for n, v in headers if n == "content-length"] == ["5"]


def test_credentials_in_headers_are_masked_wherever_the_command_is_shown():
    argv = ["-H", "X-Api-Key: s3cret", "--header=Authorization: Basic abc", "-HCookie: c=1"]
    argv += ["--header", "X-Trace: visible"]
    shown = " ".join(masked_argv(argv))
    for secret in ("s3cret", "Basic abc", "c=1"):
        assert secret not in shown
    assert "X-Trace: visible" in shown
    c = RunConfig(headers=("X-Api-Key: s3cret",), argv=tuple(argv))
    assert "s3cret" not in c.command()


def test_a_repeated_request_id_is_warned_about():
    assert RunConfig(headers=("x-request-id: short",)).notes() == []  # Lightning replaces it
    (note,) = RunConfig(headers=("X-Request-Id: " + "a" * 30,)).notes()
    assert "503" in note


def test_expect_status_specs():
    e = parse_expect("200-299, 401")
    assert 204 in e and 401 in e and 302 not in e and 500 not in e
    assert e.text == "200-299,401"
    assert 399 in DEFAULT and 400 not in DEFAULT and 200 in DEFAULT
    for bad in ("", "abc", "200-", "99", "600", "300-200", "200,,201"):
        with pytest.raises(ValueError, match="--expect-status"):
            parse_expect(bad)


def test_4xx_fail_by_default_and_are_told_apart_from_5xx_and_transport():
    rec = Recorder()
    rec.latencies += [100] * 10
    rec.statuses.update({200: 5, 302: 1, 401: 3, 503: 1})
    rec.error("reset", "peer reset")
    snap = rec.snapshot(1.0, 1.0, 1)
    assert snap.errors == 1 + 3 + 1  # transport + 401s + 503
    r = build(rec)
    assert (r.failed_4xx, r.failed_5xx, r.failed_other, r.failed_responses) == (3, 1, 0, 4)
    assert r.error_count == 5 and r.total_requests == 11
    assert r.error_rate == round(100 * 5 / 11, 1)
    row = r.csv_row()
    assert (row["failed_4xx"], row["failed_5xx"], row["transport_errors"]) == (3, 1, 1)
    assert row["error_count"] == 5 and row["expect_status"] == "200-399"
    assert list(CSV_COLUMNS[:16])[5] == "error_count"  # the seed's columns keep their places


def test_expect_status_makes_chosen_statuses_successes():
    rec = Recorder(parse_expect("200-299,401"))
    rec.latencies += [100] * 10
    rec.statuses.update({200: 5, 302: 1, 401: 3, 503: 1})
    snap = rec.snapshot(1.0, 1.0, 1)
    assert snap.errors == 2  # the 302 and the 503
    r = build(rec)
    assert (r.failed_4xx, r.failed_5xx, r.failed_other) == (0, 1, 1)
    assert r.error_count == 2 and r.expect_status == "200-299,401"


def test_todays_scenario_names_are_the_seeds_scenarios():
    assert RunConfig(scenario="direct_destination").scenario == "direct_sink"
    c = RunConfig(scenario="slow_destination")
    assert c.scenario == "slow_sink" and c.delay_ms == 2000
    with pytest.raises(ConfigError, match="direct_destination"):
        RunConfig(scenario="mock_destination")  # the sink program, not a scenario
