"""engine/lightning/setup.py without a node: what is sent, what is never shown.

The behaviour against real nodes (both APIs) is in tests/beam; here, a
recording stand-in for the RPC checks the arguments themselves.
"""

from __future__ import annotations

import asyncio
import io

import pytest

from engine.beam.terms import Atom
from engine.lightning.setup import USER_EMAIL, LightningApi, Setup, SetupError

TODAY = LightningApi(
    "today", "destination_url", actor=True, create_user="create_user",
    delete_channel=True, list_channels=True, purge_user=True,
)  # fmt: skip


class Recorded:
    """An rpc that answers from a table and records every call."""

    def __init__(self, answers: dict[tuple[str, str], object]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, list]] = []

    async def __call__(self, module: str, function: str, args: list):
        self.calls.append((module, function, args))
        answer = self.answers[(module.rsplit(".", 1)[-1], function)]
        return answer(args) if callable(answer) else answer


def created(args):
    return (Atom("ok"), {Atom("id"): "u-1", **{Atom(str(k)): v for k, v in args[0].items()}})


def test_the_users_password_is_random_sent_once_and_never_printed():
    passwords = []
    for _ in range(2):
        rpc = Recorded({("Repo", "get_by"): None, ("Accounts", "create_user"): created})
        out = io.StringIO()
        setup = Setup(rpc, out)
        setup.api = TODAY
        user = asyncio.run(setup.ensure_user())
        ((_, _, (attrs,)),) = [c for c in rpc.calls if c[1] == "create_user"]
        password = attrs[Atom("password")]
        passwords.append(password)
        assert len(password) >= 32 and attrs[Atom("email")] == USER_EMAIL
        assert attrs[Atom("confirmed")] is True  # create_user: no confirmation mail
        assert password not in out.getvalue()
        assert "password" not in out.getvalue().lower()
        assert user["id"] == "u-1"
    assert passwords[0] != passwords[1]


def test_a_found_channel_that_forwards_elsewhere_is_not_used():
    user = {Atom("id"): "u-1"}
    project = {Atom("id"): "p-1", Atom("name"): b"load-test"}
    channel = {
        Atom("id"): b"c-1",
        Atom("name"): b"load-test",
        Atom("destination_url"): b"http://elsewhere:9000",
        Atom("enabled"): True,
    }
    loaded = {
        Atom("project_users"): [{Atom("role"): Atom("owner"), Atom("project"): project}]
    }

    def get_by(args):
        return user if args[0] == "Elixir.Lightning.Accounts.User" else channel

    rpc = Recorded({("Repo", "get_by"): get_by, ("Repo", "preload"): loaded})
    setup = Setup(rpc, io.StringIO())
    setup.api = TODAY
    with pytest.raises(SetupError) as err:
        asyncio.run(setup.ensure_channel("load-test", "http://127.0.0.1:4001", repoint=False))
    assert "channel 'load-test' (c-1) forwards to http://elsewhere:9000" in str(err.value)
    assert "--repoint-channel" in err.value.hint
    assert not any(c[1] == "update_channel" for c in rpc.calls)
    # looked up by project and name, never by name alone
    lookups = [c[2][1] for c in rpc.calls if c[2][0] == "Elixir.Lightning.Channels.Channel"]
    assert lookups == [[(Atom("name"), "load-test"), (Atom("project_id"), "p-1")]]
