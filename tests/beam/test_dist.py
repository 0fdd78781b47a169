"""The hidden-node client against real erl nodes of OTP 25 and OTP 28."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import pytest

from engine.beam.dist import (
    BadRpc,
    CookieRejected,
    EpmdUnavailable,
    Node,
    NodeDown,
    NoSuchNode,
    RpcTimeout,
)
from engine.beam.terms import Atom

RELEASES = ["otp25", "otp28"]


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("release", RELEASES)
def test_rpc_memory_and_hidden_node(erl_factory, release):
    node = erl_factory(release)

    async def scenario():
        n = await Node.connect(node.name, node.cookie)
        try:
            release_text = bytes(await n.rpc("erlang", "system_info", [Atom("otp_release")]))
            memory = dict(await n.rpc("erlang", "memory", []))
            visible = await n.rpc("erlang", "nodes", [])
            hidden = await n.rpc("erlang", "nodes", [Atom("hidden")])
            echoed = await n.rpc("erlang", "list_to_tuple", [[1, "two", {Atom("k"): 3.5}]])
            big = await n.rpc("erlang", "iolist_to_binary", [b"x" * 5_000_000])
            return release_text, memory, visible, hidden, echoed, big
        finally:
            await n.close()

    release_text, memory, visible, hidden, echoed, big = run(scenario())
    assert release_text == release.removeprefix("otp").encode()
    assert memory["total"] > memory["processes"] > 0 and memory["binary"] > 0
    assert visible == []  # we never join the mesh
    assert len(hidden) == 1 and hidden[0].startswith("chanload_")
    assert echoed == (1, b"two", {"k": 3.5})
    assert len(big) == 5_000_000


@pytest.mark.parametrize("release", RELEASES)
def test_badrpc_carries_the_remote_reason(erl_factory, release):
    node = erl_factory(release)

    async def scenario():
        n = await Node.connect(node.name, node.cookie)
        try:
            with pytest.raises(BadRpc) as err:
                await n.rpc("no_such_module", "f", [1])
            return err.value
        finally:
            await n.close()

    err = run(scenario())
    assert "no_such_module.f/1" in str(err)
    assert "undef" in str(err)


@pytest.mark.parametrize("release", RELEASES)
def test_wrong_cookie_is_rejected_quickly(erl_factory, release):
    node = erl_factory(release)
    started = time.monotonic()
    with pytest.raises(CookieRejected, match="check the cookie"):
        run(Node.connect(node.name, "not-the-cookie"))
    assert time.monotonic() - started < 2


def test_no_such_node(erl_factory):
    node = erl_factory("otp25")  # EPMD runs, but not with this name
    host = node.name.split("@")[1]
    started = time.monotonic()
    with pytest.raises(NoSuchNode, match="no node named 'nobody_here'"):
        run(Node.connect(f"nobody_here@{host}", "x"))
    assert time.monotonic() - started < 2


def test_epmd_down(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]  # nothing listens there
    monkeypatch.setenv("ERL_EPMD_PORT", str(free))
    started = time.monotonic()
    with pytest.raises(EpmdUnavailable, match="EPMD is not running"):
        run(Node.connect("lightning@localhost", "x"))
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("release", RELEASES)
def test_node_killed_mid_run_fails_every_pending_call_at_once(erl_factory, release):
    node = erl_factory(release)

    async def scenario():
        n = await Node.connect(node.name, node.cookie)
        calls = [
            asyncio.ensure_future(n.rpc("timer", "sleep", [10_000], timeout=30)) for _ in range(3)
        ]
        await asyncio.sleep(0.3)
        node.kill()
        started = time.monotonic()
        results = await asyncio.gather(*calls, return_exceptions=True)
        elapsed = time.monotonic() - started
        with pytest.raises(NodeDown):
            await n.rpc("erlang", "node", [])
        await n.close()
        return results, elapsed

    results, elapsed = run(scenario())
    assert all(isinstance(r, NodeDown) for r in results), results
    assert elapsed < 2


def test_a_reply_that_never_comes_times_out(erl_factory):
    node = erl_factory("otp25")

    async def scenario():
        n = await Node.connect(node.name, node.cookie)
        try:
            with pytest.raises(RpcTimeout):
                await n.rpc("timer", "sleep", [5_000], timeout=0.5)
            return await n.rpc("erlang", "node", [])  # the connection is still fine
        finally:
            await n.close()

    assert run(scenario()) == node.name


@pytest.mark.parametrize("release", RELEASES)
def test_a_stalled_node_is_down_after_net_ticktime_and_calls_fail_at_once(erl_factory, release):
    node = erl_factory(release, "-kernel", "net_ticktime", "4")

    async def scenario():
        n = await Node.connect(node.name, node.cookie, net_ticktime=4)
        try:
            await asyncio.sleep(2)
            assert await n.rpc("erlang", "node", []) == node.name  # alive, ticking
            call = asyncio.ensure_future(n.rpc("timer", "sleep", [10_000], timeout=60))
            await asyncio.sleep(0.2)  # the call is on the node
            node.proc.send_signal(signal.SIGSTOP)  # stalled: the socket stays open
            started = time.monotonic()
            try:
                with pytest.raises(NodeDown, match="net_ticktime"):
                    await call
            finally:
                node.proc.send_signal(signal.SIGCONT)
            return time.monotonic() - started, n.lost
        finally:
            await n.close()

    took, lost = run(scenario())
    assert took < 4 + 3  # net_ticktime, plus a check interval, not the call's 60 s
    assert "nothing heard from the node for 4s" in lost


@pytest.mark.slow
@pytest.mark.parametrize("release", RELEASES)
def test_idle_connection_survives_net_ticktime(erl_factory, release):
    node = erl_factory(release, "-kernel", "net_ticktime", "8")

    async def scenario():
        n = await Node.connect(node.name, node.cookie)
        try:
            await asyncio.sleep(14)  # well past net_ticktime: only ticks go back and forth
            assert n.lost is None
            return await n.rpc("erlang", "node", [])
        finally:
            await n.close()

    assert run(scenario()) == node.name


@pytest.mark.parametrize("release", RELEASES)
def test_long_names(erl_factory, release):
    node = erl_factory(release, long_name="127.0.0.1")
    assert node.name.endswith("@127.0.0.1")

    async def scenario():
        n = await Node.connect(node.name, node.cookie)
        try:
            return await n.rpc("erlang", "node", []), n.our_name
        finally:
            await n.close()

    remote, ours = run(scenario())
    assert remote == node.name
    assert "@" in ours and "." in ours.split("@")[1]  # we used a long name too
