from __future__ import annotations

import json

import pytest

from engine.config import ConfigError, RunConfig, masked_argv, parse_url
from engine.http.payload import json_payload


def test_seed_defaults():
    c = RunConfig()
    assert (c.scenario, c.concurrency, c.duration) == ("happy_path", 10, 30.0)
    assert c.target == "http://localhost:4000"
    assert c.sink_or_default == "http://localhost:4001"
    assert c.channel == "load-test"
    assert c.payload_bytes == 1024
    assert c.response_bytes is None and c.delay_ms is None
    assert c.timeout == 30.0
    assert c.node_name.startswith("lightning@")


def test_scenario_defaults_apply_only_when_not_given():
    assert RunConfig(scenario="large_payload").payload_bytes == 1048576
    assert RunConfig(scenario="large_payload", payload_size=1024).payload_bytes == 1024
    assert RunConfig(scenario="large_response").response_bytes == 1048576
    assert RunConfig(scenario="slow_sink").delay_ms == 2000
    assert RunConfig(scenario="slow_sink", delay=0).delay_ms == 0
    assert RunConfig(scenario="slow_sink", response_size=10).query_overrides() == {
        "response_size": 10,
        "delay": 2000,
    }


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        RunConfig(
            scenario="nope",
            concurrency=0,
            duration=-1,
            payload_size=0,
            response_size=-5,
            delay=-1,
            timeout=0,
            parser="fast",
            sink="ftp://x",
            channel_url="http://",
        )
    text = "\n".join(err.value.problems)
    for option in (
        "--scenario",
        "--concurrency",
        "--duration",
        "--payload-size",
        "--response-size",
        "--delay",
        "--timeout",
        "--parser",
        "--sink",
        "--channel-url",
    ):
        assert option in text
    assert "happy_path" in text  # the accepted values are listed


def test_urls():
    u = parse_url("http://127.0.0.1:4001", "--sink")
    assert (u.host, u.port, u.path, u.authority) == ("127.0.0.1", 4001, "/", "127.0.0.1:4001")
    assert str(u.join("/test").with_query({"delay": 5})) == "http://127.0.0.1:4001/test?delay=5"
    c = parse_url("http://h/channels/abc/test?x=1", "--channel-url").with_query({"delay": 1})
    assert c.path == "/channels/abc/test?x=1&delay=1" and c.port == 80
    s = parse_url("HTTPS://h/channels/x", "--channel-url")
    assert (s.scheme, s.port, s.authority, str(s)) == ("https", 443, "h", "https://h/channels/x")
    assert parse_url("https://h:8443/", "--sink").authority == "h:8443"
    assert parse_url("http://h:443/", "--sink").authority == "h:443"
    with pytest.raises(ValueError, match="http://host:port or https://host"):
        parse_url("ftp://h/", "--sink")


def test_cookie_is_masked_in_the_command():
    assert masked_argv(["--cookie", "s3cret", "--x", "1", "--cookie=abc"]) == [
        "--cookie",
        "***",
        "--x",
        "1",
        "--cookie=***",
    ]
    c = RunConfig(cookie="s3cret", argv=("--cookie", "s3cret"))
    assert "s3cret" not in c.command()
    assert "s3cret" not in repr(c)


@pytest.mark.parametrize("size", [1, 2, 5, 40, 80, 1024, 1048576])
def test_payload_is_exact_json(size):
    body = json_payload(size)
    assert len(body) == size
    json.loads(body)
    if size >= 80:
        assert json.loads(body)["source"] == "load_test"


def test_outputs_pid_and_thresholds_are_checked_with_everything_else(tmp_path):
    # One validation, every problem at once: before this, output paths were
    # checked by the CLI after the configuration had been declared valid.
    missing = tmp_path / "no-such-dir"
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ConfigError) as info:
        RunConfig(
            concurrency=0,
            csv=str(missing / "r.csv"),
            json=str(tmp_path),
            hdr_log=str(missing / "h.log"),
            charts=str(not_a_dir),
            thresholds=("p99<50ms", "p99 is small"),
            target_pid=2**22 + 7,  # above any pid_max: no such process
        )
    problems = info.value.problems
    assert any(p.startswith("--concurrency") for p in problems)
    assert any(p.startswith("--csv") and "does not exist" in p for p in problems)
    assert any(p.startswith("--json") and "is a directory" in p for p in problems)
    assert any(p.startswith("--hdr-log") for p in problems)
    assert any(p.startswith("--charts") and "not a directory" in p for p in problems)
    assert any("p99 is small" in p for p in problems)
    assert any("no such process" in p for p in problems)
    assert len(problems) == 7, problems


def test_valid_thresholds_are_parsed_once_checked(tmp_path):
    config = RunConfig(thresholds=("p99<50ms", "errors==0"), csv=str(tmp_path / "r.csv"))
    assert [t.metric for t in config.limits] == ["p99", "errors"]
