"""The benchmark's user, project and channel on a Lightning node, on either API.

Lightning's channel API changed after the seed was written (OpenFn/lightning,
lib/lightning/channels.ex and lib/lightning/channels/channel.ex):

| | the seed's Lightning | today's Lightning |
| --- | --- | --- |
| destination field | ``sink_url`` | ``destination_url`` (``sink_url`` is dropped silently) |
| create | ``create_channel(attrs)`` | ``create_channel(attrs, actor: %User{})`` |
| update | ``update_channel(channel, attrs)`` | ``update_channel(channel, attrs, actor: %User{})`` |
| delete | (none: ``Repo.delete``) | ``delete_channel(channel, actor: %User{})`` |

Which one a node has is asked of the node (the schema's fields, the
functions its modules export), never read from a version string.

What chanload creates is its own: a user with its own address (and a random
password nobody keeps), a ``load-test`` project that user owns, and the
channel inside that project. The channel is looked up by project *and* name
(channel names are unique per project only, so ``get_by(name:)`` alone can
raise ``Ecto.MultipleResultsError``), so a same-named channel elsewhere is
never touched. ``chanload lightning cleanup`` removes all of it through the
node's own functions.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, TextIO

from engine.beam.terms import Atom

# Lightning's modules, as atoms go over the wire.
REPO = "Elixir.Lightning.Repo"
CHANNELS = "Elixir.Lightning.Channels"
CHANNEL = "Elixir.Lightning.Channels.Channel"
PROJECTS = "Elixir.Lightning.Projects"
PROJECT = "Elixir.Lightning.Projects.Project"
ACCOUNTS = "Elixir.Lightning.Accounts"
USER = "Elixir.Lightning.Accounts.User"

PROJECT_NAME = "load-test"
# chanload's own user: an address no person has (RFC 2606's example.com), so
# that it is told apart from anyone's account and no mail reaches anyone.
USER_EMAIL = "chanload-load-test@example.com"
PROJECT_DESCRIPTION = "Load tests by chanload; `chanload lightning cleanup` removes it."


class SetupError(Exception):
    """Lightning refused or answered something unexpected; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def short_id(value: Any) -> str:
    return text(value)[:8] + "..."


def changeset_errors(changeset: Any) -> str:
    """The errors of an {:error, changeset}, as Ecto would say them."""
    errors = changeset.get("errors") if isinstance(changeset, dict) else None
    if not errors:
        return repr(changeset)[:300]
    parts = []
    for item in errors:
        try:
            field_name, (message, opts) = item
            message = text(message)
            for key, value in opts or []:
                message = message.replace(f"%{{{text(key)}}}", text(value))
            parts.append(f"{text(field_name)} {message}")
        except (TypeError, ValueError):
            parts.append(repr(item))
    return "; ".join(parts)


def ok(result: Any, what: str) -> Any:
    """The value of ``{:ok, value}``; SetupError with the changeset's errors otherwise."""
    if isinstance(result, tuple) and len(result) == 2 and result[0] == "ok":
        return result[1]
    if isinstance(result, tuple) and len(result) == 2 and result[0] == "error":
        raise SetupError(f"Lightning refused to {what}: {changeset_errors(result[1])}")
    raise SetupError(f"unexpected answer when trying to {what}: {result!r:.300}")


def same_url(a: str, b: str) -> bool:
    """Equal as destinations: case of scheme and host, a trailing slash aside."""
    from urllib.parse import urlsplit

    def key(url: str) -> tuple:
        p = urlsplit(url.strip())
        port = p.port or {"http": 80, "https": 443}.get(p.scheme.lower())
        return (p.scheme.lower(), (p.hostname or "").lower(), port, p.path.rstrip("/"), p.query)

    try:
        return key(a) == key(b)
    except ValueError:
        return a == b


@dataclass(frozen=True, slots=True)
class LightningApi:
    """What the node's channel API looks like, found by asking it."""

    name: str  # "seed" | "today"
    destination_field: str  # "sink_url" | "destination_url"
    actor: bool  # create/update/delete_channel take actor: %User{}
    create_user: str  # "create_user" (no confirmation mail) or "register_user"
    delete_channel: bool  # Lightning.Channels.delete_channel/1 or /2 exists
    list_channels: bool  # Lightning.Channels.list_channels_for_project/1 exists
    purge_user: bool  # Lightning.Accounts.purge_user/1 exists

    def describe(self) -> str:
        if self.actor:
            calls = "create_channel/2, update_channel/3 with an actor"
        else:
            calls = "create_channel/1, update_channel/2"
        return f"{self.name}'s API ({self.destination_field}; {calls})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "api": self.name,
            "destination_field": self.destination_field,
            "actor": self.actor,
            "create_user": self.create_user,
        }

    def actor_opts(self, user: dict) -> list:
        """The trailing ``actor: user`` keyword list, when this API takes one."""
        return [[(Atom("actor"), user)]] if self.actor else []


class Setup:
    """The benchmark's user, project and channel, through one session's RPC."""

    def __init__(self, rpc, out: TextIO) -> None:
        self.rpc = rpc  # async (module, function, args) -> term
        self.out = out
        self.api: LightningApi | None = None

    # -- which API ----------------------------------------------------------------

    async def exports(self, module: str) -> set[tuple[str, int]]:
        pairs = await self.rpc(module, "module_info", [Atom("exports")])
        return {(text(name), arity) for name, arity in pairs}

    async def detect(self) -> LightningApi:
        fields = {text(f) for f in await self.rpc(CHANNEL, "__schema__", [Atom("fields")])}
        channels = await self.exports(CHANNELS)
        accounts = await self.exports(ACCOUNTS)
        common = {
            "create_user": "create_user" if ("create_user", 1) in accounts else "register_user",
            "list_channels": ("list_channels_for_project", 1) in channels,
            "purge_user": ("purge_user", 1) in accounts,
        }
        # (name, field, whether the calls take actor:, which adds one to each arity)
        for name, field, actor in (("today", "destination_url", True), ("seed", "sink_url", False)):
            extra = int(actor)
            if (
                field in fields
                and ("create_channel", 1 + extra) in channels
                and ("update_channel", 2 + extra) in channels
            ):
                api = LightningApi(
                    name,
                    field,
                    actor=actor,
                    delete_channel=("delete_channel", 1 + extra) in channels,
                    **common,
                )
                break
        else:
            found = sorted(f"{n}/{a}" for n, a in channels if n.endswith("_channel"))
            raise SetupError(
                "this Lightning's channel API is one chanload does not know: Channel fields"
                f" {sorted(fields)}, Lightning.Channels exports {found}",
                "chanload knows the seed's (sink_url, create_channel/1) and today's"
                " (destination_url, create_channel/2 with an actor).",
            )
        self.api = api
        return api

    # -- finding and creating ---------------------------------------------------------

    async def find_user(self) -> dict | None:
        return await self.rpc(REPO, "get_by", [Atom(USER), [(Atom("email"), USER_EMAIL)]])

    async def ensure_user(self) -> dict:
        """chanload's user (the actor of today's API), created with a random password."""
        user = await self.find_user()
        if user is not None:
            return user
        api = self.api
        assert api is not None
        attrs: dict = {
            Atom("first_name"): "chanload",
            Atom("last_name"): "load test",
            Atom("email"): USER_EMAIL,
            # Never stored or printed: nobody logs in as this user.
            Atom("password"): secrets.token_urlsafe(32),
        }
        if api.create_user == "create_user":
            attrs[Atom("confirmed")] = True
        self.out.write(f"  Creating user {USER_EMAIL}... ")
        user = ok(await self.rpc(ACCOUNTS, api.create_user, [attrs]), "create chanload's user")
        self.out.write("ok\n")
        return user

    async def own_projects(self, user: dict) -> list[dict]:
        """The ``load-test`` projects chanload's user owns."""
        loaded = await self.rpc(REPO, "preload", [user, [(Atom("project_users"), Atom("project"))]])
        return [
            pu["project"]
            for pu in loaded.get("project_users") or []
            if pu.get("role") == "owner"
            and isinstance(pu.get("project"), dict)
            and text(pu["project"].get("name")) == PROJECT_NAME
        ]

    async def ensure_project(self, user: dict) -> dict:
        projects = await self.own_projects(user)
        if projects:
            project = projects[0]
            self.out.write(
                f"  Using chanload's '{PROJECT_NAME}' project ({short_id(project['id'])})\n"
            )
            return project
        self.out.write(f"  Creating '{PROJECT_NAME}' project... ")
        result = await self.rpc(
            PROJECTS,
            "create_project",
            [
                {
                    Atom("name"): PROJECT_NAME,
                    Atom("description"): PROJECT_DESCRIPTION,
                    Atom("project_users"): [
                        {Atom("user_id"): user["id"], Atom("role"): Atom("owner")}
                    ],
                },
                False,  # no "you were added to a project" mail
            ],
        )
        project = ok(result, "create the project")
        self.out.write(f"ok (id: {short_id(project['id'])})\n")
        return project

    async def find_channel(self, name: str, project: dict) -> dict | None:
        return await self.rpc(
            REPO,
            "get_by",
            [Atom(CHANNEL), [(Atom("name"), name), (Atom("project_id"), project["id"])]],
        )

    async def ensure_channel(self, name: str, sink_url: str, repoint: bool) -> dict:
        """The channel ``name`` in chanload's project, forwarding to ``sink_url`` and enabled.

        A found channel that forwards elsewhere is used only with ``repoint``
        (which points it at ``sink_url``); otherwise SetupError.
        """
        api = self.api
        assert api is not None
        out = self.out
        user = await self.ensure_user()
        project = await self.ensure_project(user)
        out.write(f"Looking up channel '{name}' in project '{PROJECT_NAME}'... ")
        out.flush()
        channel = await self.find_channel(name, project)
        field = api.destination_field
        if channel is None:
            out.write("not found, creating\n")
            out.write(f"  Creating channel '{name}'... ")
            attrs = {
                Atom("name"): name,
                Atom(field): sink_url,
                Atom("project_id"): project["id"],
            }
            result = await self.rpc(CHANNELS, "create_channel", [attrs, *api.actor_opts(user)])
            channel = self._ok(result, "create the channel")
            out.write(f"ok (id: {short_id(channel['id'])})\n")
            return channel
        destination = text(channel.get(field))
        changes: dict = {}
        if not same_url(destination, sink_url):
            if not repoint:
                out.write("found\n")
                raise SetupError(
                    f"channel '{name}' ({text(channel['id'])}) forwards to {destination},"
                    f" not to --sink {sink_url}",
                    f"Pass --repoint-channel to point it at {sink_url}, or"
                    f" --sink {destination} to load the destination it has.",
                )
            changes[Atom(field)] = sink_url
        if channel.get("enabled") is False:
            changes[Atom("enabled")] = True
        if not changes:
            out.write(f"found (id: {short_id(channel['id'])})\n")
            return channel
        what = " and ".join(
            w
            for w, on in (
                ("disabled, enabling", Atom("enabled") in changes),
                (f"re-pointing it from {destination}", Atom(field) in changes),
            )
            if on
        )
        out.write(f"found ({what})\n")
        result = await self.rpc(
            CHANNELS, "update_channel", [channel, changes, *api.actor_opts(user)]
        )
        channel = self._ok(result, "update the channel")
        out.write(f"  Updated channel (id: {short_id(channel['id'])})\n")
        return channel

    def _ok(self, result: Any, what: str) -> Any:
        try:
            return ok(result, what)
        except SetupError:
            self.out.write("failed\n")
            raise

    # -- cleanup ------------------------------------------------------------------------

    async def cleanup(self, channel_name: str) -> list[str]:
        """Remove chanload's channels, project and user; what was removed, one line each."""
        api = self.api
        assert api is not None
        removed: list[str] = []
        user = await self.find_user()
        if user is None:
            return removed
        for project in await self.own_projects(user):
            if api.list_channels:
                channels = await self.rpc(CHANNELS, "list_channels_for_project", [project["id"]])
            else:
                found = await self.find_channel(channel_name, project)
                channels = [found] if found is not None else []
            for channel in channels:
                if api.delete_channel:
                    result = await self.rpc(
                        CHANNELS, "delete_channel", [channel, *api.actor_opts(user)]
                    )
                else:
                    result = await self.rpc(REPO, "delete", [channel])
                ok(result, f"delete channel '{text(channel['name'])}'")
                removed.append(
                    f"channel '{text(channel['name'])}' ({text(channel['id'])}),"
                    f" forwarding to {text(channel.get(api.destination_field))}"
                )
            ok(await self.rpc(PROJECTS, "delete_project", [project]), "delete the project")
            removed.append(f"project '{text(project['name'])}' ({text(project['id'])})")
        if api.purge_user:
            result = await self.rpc(ACCOUNTS, "purge_user", [user["id"]])
            if result != "ok":
                raise SetupError(
                    f"unexpected answer when trying to purge the user: {result!r:.300}"
                )
        else:
            ok(await self.rpc(ACCOUNTS, "delete_user", [user]), "delete chanload's user")
        removed.append(f"user {USER_EMAIL} ({text(user['id'])})")
        return removed
