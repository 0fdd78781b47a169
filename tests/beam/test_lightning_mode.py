"""`chanload run` in Lightning mode, against the Elixir stand-in run as a real node."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from engine.beam.dist import Node
from engine.beam.terms import Atom
from tests.support import ROOT, H11Client, chanload_command, get, run_chanload


def lightning_args(standin, sink, *extra: str) -> tuple[str, ...]:
    return (
        "--node",
        standin.name,
        "--cookie",
        standin.cookie,
        "--target",
        standin.url,
        "--sink",
        sink.url,
        "--quiet",
        *extra,
    )


def start_run(standin, sink, log, *args: str) -> subprocess.Popen:
    """`chanload run ARGS` against the stand-in, in the background, its output into log."""
    return subprocess.Popen(
        chanload_command("run", *args, *lightning_args(standin, sink)),
        stdout=open(log, "wb"),  # the child owns it
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def call(standin, module: str, function: str, args: list):
    """One RPC to the stand-in, from the test (a hidden node of our own)."""

    async def ask():
        n = await Node.connect(standin.name, standin.cookie)
        try:
            return await n.rpc(module, function, args)
        finally:
            await n.close()

    return asyncio.run(ask())


def leftovers(standin) -> dict:
    """What is left of any chanload collector on the node."""

    async def ask():
        n = await Node.connect(standin.name, standin.cookie)
        try:
            tables = await n.rpc("ets", "all", [])
            handlers = await n.rpc("telemetry", "list_handlers", [[Atom("lightning")]])
            loaded = await n.rpc("code", "all_loaded", [])
            registered = await n.rpc("erlang", "registered", [])
            return {
                "tables": [t for t in tables if str(t).startswith("chanload_telemetry")],
                "handlers": handlers,
                "modules": [m for m, _ in loaded if str(m).startswith("Elixir.Chanload")],
                "owners": [r for r in registered if str(r).startswith("chanload_telemetry")],
            }
        finally:
            await n.close()

    return asyncio.run(ask())


def nothing_left(standin) -> None:
    assert leftovers(standin) == {"tables": [], "handlers": [], "modules": [], "owners": []}


def test_channel_created_once_then_found_with_memory_and_timing(standin, sink, tmp_path):
    first = run_chanload(
        tmp_path,
        "--scenario",
        "happy_path",
        "--duration",
        "2",
        "--concurrency",
        "4",
        *lightning_args(standin, sink),
    )
    assert first.code == 0, first.stderr + first.stdout
    text = first.stdout
    assert "Looking up channel 'load-test' in project 'load-test'... not found, creating" in text
    # the user first (today's actor), then its project, then the channel
    assert text.index("Creating user") < text.index("Creating 'load-test' project... ok")
    assert text.index("Creating 'load-test' project") < text.index("Creating channel")
    api = f"{standin.profile}'s API"
    assert f"Asking the node for its channel API... {api}" in text
    assert f"Lightning:   {api}" in text
    second_csv = tmp_path / "second.csv"
    second = run_chanload(
        tmp_path,
        "--scenario",
        "large_payload",
        "--duration",
        "2",
        "--concurrency",
        "4",
        "--csv",
        str(second_csv),
        *lightning_args(standin, sink),
    )
    assert second.code == 0, second.stderr
    assert re.search(
        r"Looking up channel 'load-test' in project 'load-test'\.\.\. found \(id: [0-9a-f]{8}",
        second.stdout,
    )
    assert "creating" not in second.stdout
    assert second.result["memory_verdict"].startswith("streaming")
    ids = {r.result["url"].split("/channels/")[1].split("/")[0] for r in (first, second)}
    assert len(ids) == 1  # the same channel both times

    for run in (first, second):
        r = run.result
        assert r["target_kind"] == "lightning"
        assert r["error_count"] == 0 and r["total_requests"] > 50
        mem = r["memory"]
        assert mem["source"] == "Lightning BEAM"
        assert mem["start_bytes"] > 0 and mem["max_bytes"] >= mem["end_bytes"] > 0
        assert mem["delta_bytes"] == mem["end_bytes"] - mem["start_bytes"]
        assert len(mem["samples"]) >= 3  # baseline, during, after
        assert mem["samples"][0][0] == 0.0  # the baseline is taken before the load
        assert r["lightning"]["api"] == standin.profile
        assert r["lightning"]["channel"]["destination"] == sink.url
        events = r["server_timing"]["events"]
        for key in ("request", "fetch_channel", "upstream"):
            assert events[key]["count"] == r["total_requests"], key
        assert events["request"]["p50_us"] >= events["upstream"]["p50_us"]
        used = r["server_timing"]["events_used"]
        if standin.profile == "today":  # the whole plug call is :inbound
            assert used["total"] == "inbound"
            assert events["inbound"]["count"] == r["total_requests"]
            assert events["inbound"]["p50_us"] >= events["request"]["p50_us"]
            assert r["server_timing"]["unresolved"] == {}
        else:
            assert used["total"] == "request" and "inbound" not in events
            assert r["server_timing"]["unresolved"] is None
        total = events[used["total"]]
        assert r["server_timing"]["plug_overhead_mean_us"] == round(
            total["mean_us"] - events["fetch_channel"]["mean_us"] - events["upstream"]["mean_us"],
            1,
        )
        text = run.stdout
        assert "Memory (Lightning BEAM):" in text
        for label in ("start:", "end:", "max:", "delta:"):
            assert label in text
        assert " Channel Proxy Timing (server-side):" in text
        assert re.search(
            rf"Total request\s+p50=\S+, p95=\S+, p99=\S+, n={r['total_requests']}\b", text
        )
        assert "Plug overhead" in text
        assert "Tearing down telemetry collector... ok" in text
    (values,) = list(csv.DictReader(second_csv.open()))
    assert int(values["server_request_count"]) == second.result["total_requests"]
    assert int(values["memory_start_bytes"]) == second.result["memory"]["start_bytes"]

    nothing_left(standin)


def test_large_payload_through_a_streaming_proxy_is_judged_streaming(standin, sink, tmp_path):
    run = run_chanload(
        tmp_path,
        "--scenario",
        "large_payload",
        "--duration",
        "3",
        "--concurrency",
        "4",
        *lightning_args(standin, sink),
    )
    assert run.code == 0, run.stderr
    r = run.result
    assert r["error_count"] == 0
    assert r["body_bytes_out"] == r["total_requests"] * 1048576
    assert r["memory_verdict"].startswith("streaming")
    assert " Verdict:     streaming" in run.stdout
    assert r["server_timing"]["events"]["request"]["count"] == r["total_requests"]


def chanload(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    out = subprocess.run(
        chanload_command("run", *args), capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    return out, time.monotonic() - started


def test_wrong_cookie_exits_1_quickly_with_a_hint(standin, sink):
    out, elapsed = chanload(
        "--scenario",
        "happy_path",
        "--node",
        standin.name,
        "--cookie",
        "wrong-cookie",
        "--target",
        standin.url,
        "--sink",
        sink.url,
    )
    assert out.returncode == 1
    assert "check the cookie" in out.stderr
    assert "wrong-cookie" not in out.stdout + out.stderr
    assert elapsed < 2 + 1.5  # the failure itself under 2 s, plus start-up


def test_no_such_node_exits_1(standin, sink):
    host = standin.name.split("@")[1]
    out, _ = chanload(
        "--scenario", "happy_path", "--node", f"nobody@{host}", "--cookie", "x", "--sink", sink.url
    )
    assert out.returncode == 1
    assert "no node named 'nobody'" in out.stderr
    assert "--node" in out.stderr  # the hint


def test_epmd_down_exits_1(sink):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    started = time.monotonic()
    out = subprocess.run(
        chanload_command(
            "run", "--node", "lightning@localhost", "--cookie", "x", "--sink", sink.url
        ),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "ERL_EPMD_PORT": str(free)},
    )
    assert out.returncode == 1
    assert "EPMD is not running" in out.stderr
    assert time.monotonic() - started < 4


def test_the_cookie_never_appears_anywhere(standin, sink, tmp_path):
    csv = tmp_path / "r.csv"
    run = run_chanload(
        tmp_path,
        "--scenario",
        "happy_path",
        "--duration",
        "1",
        "--concurrency",
        "2",
        "--csv",
        str(csv),
        *lightning_args(standin, sink),
    )
    assert run.code == 0, run.stderr
    secret = standin.cookie
    assert secret not in run.stdout + run.stderr
    assert secret not in json.dumps(run.result)
    assert secret not in csv.read_text()
    assert "--cookie ***" in run.stdout


def test_node_killed_mid_run_the_run_still_finishes(standin, sink, tmp_path):
    timer = threading.Timer(1.5, standin.kill)
    timer.start()
    try:
        run = run_chanload(
            tmp_path,
            "--scenario",
            "happy_path",
            "--duration",
            "4",
            "--concurrency",
            "2",
            "--timeout",
            "2",
            *lightning_args(standin, sink),
        )
    finally:
        timer.cancel()
    assert run.code == 0, run.stderr
    r = run.result
    assert r["memory"]["lost_at"] is not None
    assert "sampling lost at" in run.stdout
    assert r["server_timing"] and r["server_timing"]["lost"], run.stdout[-3000:]
    # the collector could not be removed: how to do it by hand
    assert "The node went away before the telemetry collector was removed" in run.stdout
    assert f':telemetry.detach("chanload-telemetry-{r["lightning"]["collector"][-8:]}")' in (
        run.stdout
    )
    assert r["transport_errors"] > 0  # the proxy died with the node
    assert r["responses"] > 0  # and answered before that
    assert run.elapsed < 4 + 2 + 6


def test_a_node_without_lightning_gives_badrpc_with_the_remote_reason(erl_factory, sink):
    node = erl_factory("otp25")
    out, elapsed = chanload(
        "--scenario",
        "happy_path",
        "--node",
        node.name,
        "--cookie",
        node.cookie,
        "--sink",
        sink.url,
    )
    assert out.returncode == 1
    assert "Elixir.Lightning.Channels.Channel.__schema__/1 failed on the node" in out.stderr
    assert "undef" in out.stderr
    assert "is this a Lightning node?" in out.stderr
    assert elapsed < 2 + 1.5


def test_suite_against_lightning(standin, sink, tmp_path):
    out = subprocess.run(
        chanload_command(
            "suite",
            "--node",
            standin.name,
            "--cookie",
            standin.cookie,
            "--target",
            standin.url,
            "--sink",
            sink.url,
            "--duration",
            "1",
            "--concurrency",
            "2",
            "--out-dir",
            str(tmp_path),
        ),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr + out.stdout[-3000:]
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    results = doc["results"]
    assert len(results) == 7
    assert results[0]["target_kind"] == "direct"
    for r in results[1:]:
        assert r["target_kind"] == "lightning"
        assert r["memory"]["source"] == "Lightning BEAM"
        assert r["server_timing"]["events"]["request"]["count"] == r["total_requests"]
    assert doc["overhead"]["server_timing"]["source"] == "Lightning telemetry"
    assert "server-side (happy_path): Total request p50=" in out.stdout
    assert standin.cookie not in out.stdout + next(tmp_path.glob("*.log")).read_text()
    assert out.stdout.count("in project 'load-test'... not found, creating") == 1


def test_saturation_against_lightning_resets_the_collector_per_step(standin, sink, tmp_path):
    run = run_chanload(
        tmp_path,
        "--scenario",
        "saturation",
        "--duration",
        "0.7",
        "--concurrency",
        "5",
        *lightning_args(standin, sink),
    )
    assert run.code == 0, run.stderr + run.stdout
    steps = run.result["results"]
    assert [s["concurrency"] for s in steps] == [1, 2, 5]
    for s in steps:
        # Each step's server-side count is its own: the collector was reset before it.
        assert s["total_requests"] > 0
        assert s["server_timing"]["events"]["request"]["count"] == s["total_requests"]
        assert s["memory"]["start_bytes"] > 0
    assert " Saturation Test Results" in run.stdout
    assert "Tearing down telemetry collector... ok" in run.stdout
    nothing_left(standin)


def test_interrupted_lightning_run_reports_timing_and_tears_the_collector_down(
    standin, sink, tmp_path
):
    out_json = tmp_path / "r.json"
    log = tmp_path / "out.txt"
    proc = start_run(
        standin, sink, log, "--scenario", "happy_path", "--duration", "60",
        "--concurrency", "2", "--json", str(out_json),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "Command:" not in log.read_text():  # the banner: the load starts now
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        # and the collector is there while it runs
        assert len(leftovers(standin)["tables"]) == 1
        proc.send_signal(2)  # SIGINT
        code = proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 130, text
    assert "Tearing down telemetry collector... ok" in text
    r = json.loads(out_json.read_text())
    assert r["interrupted"] is True
    assert r["server_timing"]["events"]["request"]["count"] == r["total_requests"] > 0
    nothing_left(standin)


def test_the_cookie_given_on_the_command_line_is_not_in_ps(standin, sink, tmp_path):
    log = tmp_path / "out.txt"
    proc = start_run(
        standin, sink, log, "--scenario", "happy_path", "--duration", "2", "--concurrency", "1",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "Command:" not in log.read_text():  # running, after the re-exec
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()  # what ps shows
        assert standin.cookie.encode() not in cmdline
        assert b"cli.chanload" in cmdline and b"--node" in cmdline
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "--cookie ***" in text and standin.cookie not in text


def test_a_node_stalled_mid_run_the_run_still_ends_with_bounded_waits(standin, sink, tmp_path):
    # SIGSTOP: the node (and the proxy it serves) stops answering, its socket stays open.
    out_json = tmp_path / "r.json"
    log = tmp_path / "out.txt"
    proc = start_run(
        standin, sink, log, "--scenario", "happy_path", "--duration", "3",
        "--concurrency", "2", "--timeout", "2", "--json", str(out_json),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "Starting load test" not in log.read_text():  # collector deployed, load on
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        time.sleep(0.5)
        standin.proc.send_signal(signal.SIGSTOP)
        stalled = time.monotonic()
        code = proc.wait(60)
        took = time.monotonic() - stalled
    finally:
        standin.proc.send_signal(signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 0, text[-3000:]
    r = json.loads(out_json.read_text())
    assert r["errors"]["timeout"] > 0  # the requests in flight at the stall
    assert r["memory"]["lost_at"] is not None and "no answer" in r["memory"]["lost_reason"]
    assert r["server_timing"]["lost"]
    assert "Tearing down telemetry collector... failed" in text
    assert ":telemetry.detach(" in text and "chanload lightning cleanup" in text
    # the rest of the load, the 2 s timeout, a 5 s memory sample, then 3 s per call
    assert took < 20, f"took {took:.1f}s after the stall"


# -- today's Lightning and the seed's: setup, refusals, timing, cleanup ----------------

REPO = "Elixir.Lightning.Repo"
CHANNELS = "Elixir.Lightning.Channels"
CHANNEL = "Elixir.Lightning.Channels.Channel"


def field(standin) -> str:
    return "destination_url" if standin.profile == "today" else "sink_url"


def actor(standin, user) -> list:
    """The trailing `actor: user` of today's channel functions."""
    return [[(Atom("actor"), user)]] if standin.profile == "today" else []


def someone_elses_channel(standin, destination: str) -> dict:
    """A user, a project and a channel named load-test that are not chanload's."""
    user_fn = "create_user" if standin.profile == "today" else "register_user"
    ok, user = call(
        standin,
        "Elixir.Lightning.Accounts",
        user_fn,
        [{Atom("first_name"): "Ada", Atom("last_name"): "L", Atom("email"): "ada@example.org",
          Atom("password"): "a long enough password"}],
    )  # fmt: skip
    assert ok == "ok", user
    ok, project = call(
        standin,
        "Elixir.Lightning.Projects",
        "create_project",
        [{Atom("name"): "load-test",
          Atom("project_users"): [{Atom("user_id"): user["id"], Atom("role"): Atom("owner")}]},
         False],
    )  # fmt: skip
    assert ok == "ok", project
    attrs = {Atom("name"): "load-test", Atom(field(standin)): destination,
             Atom("project_id"): project["id"]}  # fmt: skip
    ok, channel = call(standin, CHANNELS, "create_channel", [attrs, *actor(standin, user)])
    assert ok == "ok", channel
    return {"user": user, "project": project, "channel": channel}


def chanloads_channel(standin, run) -> dict:
    channel_id = run.result["url"].split("/channels/")[1].split("/")[0]
    return call(standin, REPO, "get", [Atom(CHANNEL), channel_id])


def chanloads_user(standin) -> dict | None:
    return call(
        standin,
        REPO,
        "get_by",
        [Atom("Elixir.Lightning.Accounts.User"),
         [(Atom("email"), "chanload-load-test@example.com")]],
    )  # fmt: skip


def short_run(standin, sink, tmp_path, *extra: str):
    return run_chanload(
        tmp_path, "--scenario", "happy_path", "--duration", "1", "--concurrency", "2",
        *lightning_args(standin, sink), *extra,
    )  # fmt: skip


def test_a_same_named_channel_elsewhere_neither_crashes_the_run_nor_gets_load(
    standin, sink, tmp_path
):
    # Channel names are unique per project only: Repo.get_by(name:) alone raises
    # Ecto.MultipleResultsError once two projects have a load-test channel.
    other = someone_elses_channel(standin, "http://127.0.0.1:9/nowhere")
    run = short_run(standin, sink, tmp_path)
    assert run.code == 0, run.stderr + run.stdout
    assert "not found, creating" in run.stdout  # chanload's own, beside the other
    assert run.result["error_count"] == 0 and run.result["total_requests"] > 10
    mine = chanloads_channel(standin, run)
    assert mine["id"] != other["channel"]["id"]
    assert mine["project_id"] != other["project"]["id"]
    again = short_run(standin, sink, tmp_path)  # found again in its own project
    assert again.code == 0 and "creating" not in again.stdout
    assert chanloads_channel(standin, again)["id"] == mine["id"]
    if standin.profile == "today":  # Lightning records every request it proxies
        rows = call(standin, REPO, "all", [Atom("Elixir.Lightning.Channels.ChannelRequest")])
        assert not [r for r in rows if r["channel_id"] == other["channel"]["id"]]
        assert len([r for r in rows if r["channel_id"] == mine["id"]]) >= run.result[
            "total_requests"
        ] + again.result["total_requests"]


def test_each_profile_frames_responses_and_reaches_upstream_as_its_lightning_does(
    standin, sink, tmp_path
):
    # today: ChannelProxyPlug streams the upstream's body to the client with
    # send_chunked (lib/lightning_web/plugs/channel_proxy_plug.ex), and Philter
    # opens a new upstream connection for every request. The seed's: the
    # Content-Length passes through, one pooled upstream connection per client one.
    run = short_run(standin, sink, tmp_path)
    assert run.code == 0, run.stderr + run.stdout
    path = run.result["url"].split(str(standin.port), 1)[1]
    sizes = (0, 1000, 70_000)
    with H11Client(standin.port) as client:
        answers = [client.request("GET", f"{path}?response_size={n}") for n in sizes]
    for n, answer in zip(sizes, answers, strict=True):
        assert answer.status == 200 and len(answer.body) == n
        if standin.profile == "today":
            assert answer.headers.get("transfer-encoding") == "chunked", answer.headers
            assert "content-length" not in answer.headers
        else:
            assert answer.headers.get("content-length") == str(n), answer.headers
    sink.stop()
    accepted = sink.summary["accepted"]
    proxied = run.result["total_requests"] + len(sizes)
    assert proxied > 20
    if standin.profile == "today":
        assert accepted >= proxied
    else:  # two VUs, the preflight through the channel, ours, the sink's preflight
        assert accepted <= 5


def test_a_disabled_channel_is_enabled_through_the_apis_update(standin, sink, tmp_path):
    first = short_run(standin, sink, tmp_path)
    assert first.code == 0, first.stderr
    channel = chanloads_channel(standin, first)
    user = chanloads_user(standin)
    ok, disabled = call(
        standin, CHANNELS, "update_channel",
        [channel, {Atom("enabled"): False}, *actor(standin, user)],
    )  # fmt: skip
    assert ok == "ok" and disabled["enabled"] is False
    second = short_run(standin, sink, tmp_path)
    assert second.code == 0, second.stderr + second.stdout
    assert "found (disabled, enabling)" in second.stdout
    assert second.result["error_count"] == 0
    enabled = chanloads_channel(standin, second)
    assert enabled["enabled"] is True and enabled["id"] == channel["id"]
    if standin.profile == "today":  # optimistic locking: each update bumps it
        assert enabled["lock_version"] == channel["lock_version"] + 2


def test_a_channel_forwarding_elsewhere_stops_the_run_unless_repointed(
    standin, sink, sink_factory, tmp_path
):
    first = short_run(standin, sink, tmp_path)
    assert first.code == 0, first.stderr
    other_sink = sink_factory()
    out, elapsed = chanload(
        "--scenario", "happy_path", "--duration", "5",
        *lightning_args(standin, other_sink),
    )  # fmt: skip
    assert out.returncode == 1, out.stdout
    channel_id = first.result["url"].split("/channels/")[1].split("/")[0]
    assert f"channel 'load-test' ({channel_id}) forwards to {sink.url}" in out.stderr
    assert f"not to --sink {other_sink.url}" in out.stderr
    assert "--repoint-channel" in out.stderr
    assert "Starting load test" not in out.stdout and elapsed < 5 + 3
    moved = short_run(standin, other_sink, tmp_path, "--repoint-channel")
    assert moved.code == 0, moved.stderr + moved.stdout
    assert f"re-pointing it from {sink.url}" in moved.stdout
    assert chanloads_channel(standin, moved)[field(standin)] == other_sink.url.encode()
    assert moved.result["lightning"]["channel"]["destination"] == other_sink.url


def test_requests_answered_without_a_channel_are_shown(standin, sink, tmp_path):
    out_json = tmp_path / "r.json"
    log = tmp_path / "out.txt"
    proc = start_run(
        standin, sink, log, "--scenario", "happy_path", "--duration", "3",
        "--concurrency", "1", "--json", str(out_json),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "Command:" not in log.read_text():  # the collector counts from now
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        for path in ["/channels/00000000-0000-4000-8000-000000000000/x"] * 3 + [
            "/channels/not-a-uuid/x"
        ] * 2:
            assert get(standin.port, path).status == 404
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    r = json.loads(out_json.read_text())
    text = log.read_text()
    if standin.profile == "today":
        assert r["server_timing"]["unresolved"] == {"unknown_channel": 3, "invalid_uuid": 2}
        assert r["server_timing"]["events"]["inbound"]["count"] == r["total_requests"]
        assert "Not resolved: 5 answered without a channel" in text
        assert "invalid_uuid 2, unknown_channel 3" in text
    else:  # the seed's Lightning has no span that tells them apart
        assert r["server_timing"]["unresolved"] is None
        assert "Not resolved" not in text


def test_cleanup_removes_what_chanload_created_and_nothing_else(standin, sink, tmp_path):
    other = someone_elses_channel(standin, "http://127.0.0.1:9/nowhere")
    run = short_run(standin, sink, tmp_path)
    assert run.code == 0, run.stderr
    mine = chanloads_channel(standin, run)
    cleanup = subprocess.run(
        chanload_command(
            "lightning", "cleanup", "--node", standin.name, "--cookie", standin.cookie
        ),
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert cleanup.returncode == 0, cleanup.stderr + cleanup.stdout
    out = cleanup.stdout
    channel_id = mine["id"].decode()
    assert f"channel 'load-test' ({channel_id}), forwarding to {sink.url}" in out
    assert f"project 'load-test' ({mine['project_id'].decode()})" in out
    assert "user chanload-load-test@example.com" in out
    assert standin.cookie not in out + cleanup.stderr
    assert call(standin, REPO, "get", [Atom(CHANNEL), channel_id]) is None
    assert call(standin, REPO, "get", [Atom("Elixir.Lightning.Projects.Project"),
                                        mine["project_id"]]) is None  # fmt: skip
    assert chanloads_user(standin) is None
    # someone else's same-named channel and project are untouched
    theirs = call(standin, REPO, "get", [Atom(CHANNEL), other["channel"]["id"]])
    assert theirs is not None and theirs["name"] == b"load-test"
    again = subprocess.run(
        chanload_command("lightning", "cleanup", "--node", standin.name),
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "CHANLOAD_COOKIE": standin.cookie},
    )  # fmt: skip
    assert again.returncode == 0 and "Nothing of chanload's was on the node." in again.stdout


def test_two_runs_against_one_node_keep_their_own_collectors(standin, sink, tmp_path):
    assert short_run(standin, sink, tmp_path).code == 0  # the channel exists from here
    outs = [tmp_path / f"r{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen(
            chanload_command(
                "run", "--scenario", "happy_path", "--duration", duration,
                "--concurrency", "1", "--json", str(out), *lightning_args(standin, sink),
            ),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        )
        for out, duration in zip(outs, ("4", "1.5"), strict=True)
    ]  # fmt: skip
    try:
        codes = [p.wait(60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0]
    long, short = (json.loads(o.read_text()) for o in outs)
    # The short run ended (and tore its collector down) while the long one ran:
    # the long one still has its own, counting only its own requests... plus
    # the other's while both ran (one node, one proxy): at least its own.
    assert long["lightning"]["collector"] != short["lightning"]["collector"]
    long_count = long["server_timing"]["events"]["upstream"]["count"]
    assert long_count >= long["total_requests"]
    assert long_count <= long["total_requests"] + short["total_requests"] + 2
    nothing_left(standin)


# -- today's Lightning only: client authentication, the egress policy ------------------


def test_a_channel_with_client_auth_gets_401_until_the_header_is_given(
    standin_factory, sink, tmp_path
):
    standin = standin_factory(profile="today")
    first = short_run(standin, sink, tmp_path)
    assert first.code == 0, first.stderr
    channel = chanloads_channel(standin, first)
    user = chanloads_user(standin)
    # As a project admin would (lib/lightning/webhook_auth_methods.ex, channels.ex).
    ok, method = call(
        standin, "Elixir.Lightning.WebhookAuthMethods", "create_auth_method",
        [{Atom("name"): "bench key", Atom("auth_type"): Atom("api"),
          Atom("api_key"): "k3y-for-the-bench", Atom("project_id"): channel["project_id"]},
         [(Atom("actor"), user)]],
    )  # fmt: skip
    assert ok == "ok", method
    ok, channel = call(
        standin, CHANNELS, "update_channel",
        [channel, {Atom("client_auth_methods"): [{Atom("webhook_auth_method_id"): method["id"]}]},
         [(Atom("actor"), user)]],
    )  # fmt: skip
    assert ok == "ok", channel

    out, elapsed = chanload("--scenario", "happy_path", "--duration", "5",
                            *lightning_args(standin, sink))  # fmt: skip
    assert out.returncode == 1, out.stdout
    assert "the channel wants client authentication (401)" in out.stderr
    assert '{"error":"Unauthorized"}' in out.stderr
    assert "--header 'x-api-key: KEY'" in out.stderr
    assert "Starting load test" not in out.stdout and elapsed < 5 + 3
    assert "Tearing down" not in out.stdout  # refused before the collector was deployed
    nothing_left(standin)

    run = short_run(standin, sink, tmp_path, "-H", "x-api-key: k3y-for-the-bench")
    assert run.code == 0, run.stderr + run.stdout
    r = run.result
    assert r["error_count"] == 0 and r["statuses"] == {"200": r["total_requests"]}
    assert "k3y-for-the-bench" not in run.stdout + json.dumps(r)
    assert "x-api-key: ***" in run.stdout


def test_a_destination_blocked_by_the_egress_policy_is_explained(
    standin_factory, sink, tmp_path
):
    standin = standin_factory(profile="today", egress_open=False)  # Lightning's default
    out, elapsed = chanload("--scenario", "happy_path", "--duration", "5",
                            *lightning_args(standin, sink))  # fmt: skip
    assert out.returncode == 1, out.stdout
    assert "403: egress policy" in out.stderr
    assert "Request blocked by egress policy" in out.stderr
    assert "CHANNEL_BLOCK_PRIVATE_NETWORKS=false" in out.stderr
    assert "CHANNEL_ALLOWED_HOSTS" in out.stderr
    assert elapsed < 5 + 3
    nothing_left(standin)


def test_any_proxy_url_to_an_unknown_channel_is_explained(standin_factory, sink):
    standin = standin_factory(profile="today")
    url = f"{standin.url}/channels/00000000-0000-4000-8000-000000000000/test"
    out, _ = chanload("--channel-url", url, "--duration", "5")
    assert out.returncode == 1
    assert "no such channel (404)" in out.stderr
