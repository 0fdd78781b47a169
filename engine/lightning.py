"""Lightning mode: the node over Erlang distribution, the channel, memory, timing.

What the seed did as a named Elixir node, done as a hidden node from Python
(engine/beam): find or create the benchmark channel, sample the node's memory
from a baseline before the load to a last sample after it, and collect the
channel proxy's server-side timing with a collector deployed for the run and
removed after it, also when the run fails or is interrupted.
"""

from __future__ import annotations

import stat
import sys
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from engine.beam.dist import BadRpc, DistError, Node, RpcTimeout
from engine.beam.terms import Atom
from engine.config import RunConfig, parse_url
from engine.metrics import new_histogram
from engine.probes import MemoryProbe, ProbeLost
from engine.target import Target, TargetError, check, check_sink
from engine.timing import EventTiming, ServerTiming

PROJECT_NAME = "load-test"
USER_EMAIL = "load-test@openfn.org"
USER_PASSWORD = "load-test-password-12345"
EVENTS = [
    [Atom("lightning"), Atom("channel_proxy"), Atom("request")],
    [Atom("lightning"), Atom("channel_proxy"), Atom("fetch_channel")],
    [Atom("lightning"), Atom("channel_proxy"), Atom("upstream")],
]
COLLECTOR = "Elixir.Chanload.TelemetryCollector"
CONNECT_TIMEOUT = 2.0
STALLED_TIMEOUT = 3.0  # seconds per call once the node has stopped answering


class LightningError(TargetError):
    """Lightning mode cannot go on; ``code`` is the exit code."""

    def __init__(self, message: str, hint: str = "", code: int = 1) -> None:
        super().__init__(message, code, hint)


def resolve_cookie(given: str | None, warn: TextIO | None = None) -> str:
    """--cookie (or $CHANLOAD_COOKIE, already folded in), else ~/.erlang.cookie."""
    if given:
        return given
    path = Path.home() / ".erlang.cookie"
    try:
        mode = path.stat().st_mode
        cookie = path.read_text().strip()
    except OSError:
        raise LightningError(
            "no Erlang cookie: give --cookie, set CHANLOAD_COOKIE, or create ~/.erlang.cookie",
            code=2,
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            f"chanload: warning: {path} is readable by others (mode {stat.S_IMODE(mode):o});"
            " Erlang wants 400 or 600",
            file=warn or sys.stderr,
        )
    return cookie


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


class Session:
    """One Lightning node, for the length of a run."""

    def __init__(self, node: Node, out: TextIO) -> None:
        self.node = node
        self.out = out
        self.channel: dict | None = None
        self.collector = False
        # The node stopped answering (a call timed out): what is left to ask
        # after the run (timing, teardown) gets short timeouts, not the usual.
        self.stalled = False

    @classmethod
    async def connect(cls, node_name: str, cookie: str, out: TextIO) -> Session:
        out.write(f"Connecting to {node_name}... ")
        out.flush()
        try:
            node = await Node.connect(node_name, cookie, timeout=CONNECT_TIMEOUT)
        except DistError as exc:
            out.write("failed\n")
            raise LightningError(str(exc), exc.hint) from None
        except TimeoutError:
            out.write("failed\n")
            raise LightningError(
                f"no answer from {node_name} within {CONNECT_TIMEOUT:g}s",
                "Is the node up and reachable? Is the host part of --node right?",
            ) from None
        out.write("ok\n")
        return cls(node, out)

    async def rpc(self, module: str, function: str, args: list, timeout: float = 15.0) -> Any:
        try:
            return await self.node.rpc(module, function, args, timeout)
        except BadRpc as exc:
            raise LightningError(
                str(exc), "The node refused the call: is this a Lightning node?"
            ) from None
        except DistError as exc:
            raise LightningError(str(exc), exc.hint) from None

    async def close(self) -> None:
        await self.node.close()

    # -- the channel -----------------------------------------------------------

    async def ensure_channel(self, name: str, sink_url: str) -> dict:
        out = self.out
        out.write(f"Looking up channel '{name}'... ")
        out.flush()
        channel = await self.rpc(
            "Elixir.Lightning.Repo",
            "get_by",
            [Atom("Elixir.Lightning.Channels.Channel"), [(Atom("name"), name)]],
        )
        if channel is None:
            out.write("not found, creating\n")
            project = await self._ensure_project()
            out.write(f"  Creating channel '{name}'... ")
            result = await self.rpc(
                "Elixir.Lightning.Channels",
                "create_channel",
                [
                    {
                        Atom("name"): name,
                        Atom("sink_url"): sink_url,
                        Atom("project_id"): project["id"],
                    }
                ],
            )
            channel = self._ok(result, "create the channel")
            out.write(f"ok (id: {short_id(channel['id'])})\n")
        elif channel.get("enabled") is False:
            out.write("found (disabled), enabling\n")
            result = await self.rpc(
                "Elixir.Lightning.Channels", "update_channel", [channel, {Atom("enabled"): True}]
            )
            channel = self._ok(result, "enable the channel")
            out.write(f"  Enabled channel (id: {short_id(channel['id'])})\n")
        else:
            out.write(f"found (id: {short_id(channel['id'])})\n")
        if text(channel.get("sink_url")) != sink_url:
            out.write(
                f"  note: the channel forwards to {text(channel.get('sink_url'))},"
                f" not to --sink {sink_url}\n"
            )
        self.channel = channel
        return channel

    def _ok(self, result: Any, what: str) -> dict:
        if isinstance(result, tuple) and len(result) == 2 and result[0] == "ok":
            return result[1]
        if isinstance(result, tuple) and len(result) == 2 and result[0] == "error":
            self.out.write("failed\n")
            raise LightningError(f"Lightning refused to {what}: {changeset_errors(result[1])}")
        raise LightningError(f"unexpected answer when trying to {what}: {result!r:.300}")

    async def _ensure_project(self) -> dict:
        project = await self.rpc(
            "Elixir.Lightning.Repo",
            "get_by",
            [Atom("Elixir.Lightning.Projects.Project"), [(Atom("name"), PROJECT_NAME)]],
        )
        if project is not None:
            self.out.write(
                f"  Using existing '{PROJECT_NAME}' project (id: {short_id(project['id'])})\n"
            )
            return project
        self.out.write(f"  Creating '{PROJECT_NAME}' project... ")
        user = await self._ensure_user()
        result = await self.rpc(
            "Elixir.Lightning.Projects",
            "create_project",
            [
                {
                    Atom("name"): PROJECT_NAME,
                    Atom("project_users"): [
                        {Atom("user_id"): user["id"], Atom("role"): Atom("owner")}
                    ],
                },
                False,
            ],
        )
        project = self._ok(result, "create the project")
        self.out.write(f"ok (id: {short_id(project['id'])})\n")
        return project

    async def _ensure_user(self) -> dict:
        user = await self.rpc(
            "Elixir.Lightning.Repo",
            "get_by",
            [Atom("Elixir.Lightning.Accounts.User"), [(Atom("email"), USER_EMAIL)]],
        )
        if user is not None:
            return user
        result = await self.rpc(
            "Elixir.Lightning.Accounts",
            "register_user",
            [
                {
                    Atom("first_name"): "Load",
                    Atom("last_name"): "Test",
                    Atom("email"): USER_EMAIL,
                    Atom("password"): USER_PASSWORD,
                }
            ],
        )
        return self._ok(result, "create the load-test user")

    # -- the telemetry collector -------------------------------------------------

    async def deploy_collector(self) -> bool:
        self.out.write("Deploying telemetry collector... ")
        self.out.flush()
        source = resources.files("engine.beam").joinpath("collector.exs").read_text()
        try:
            await self.node.rpc("Elixir.Code", "eval_string", [source], timeout=30)
            await self.node.rpc(COLLECTOR, "start", [EVENTS], timeout=10)
        except DistError as exc:
            self.out.write(f"failed, timing disabled ({exc})\n")
            return False
        self.collector = True
        self.out.write("ok\n")
        return True

    async def reset_collector(self) -> None:
        if self.collector:
            await self.node.rpc(COLLECTOR, "reset", [], timeout=10)

    async def collect_timing(self) -> ServerTiming | None:
        if not self.collector:
            return None
        try:
            summary = await self.node.rpc(
                COLLECTOR, "summary", [], timeout=STALLED_TIMEOUT if self.stalled else 15
            )
        except DistError as exc:
            self.stalled = self.stalled or isinstance(exc, RpcTimeout)
            return ServerTiming(lost=str(exc), source="Lightning telemetry")
        return timing_from_collector(summary)

    async def teardown_collector(self) -> None:
        if not self.collector or self.node.lost is not None:
            return
        self.out.write("Tearing down telemetry collector... ")
        timeout = STALLED_TIMEOUT if self.stalled else 10
        try:
            await self.node.rpc(COLLECTOR, "stop", [], timeout=timeout)
            await self.node.rpc("code", "purge", [Atom(COLLECTOR)], timeout=timeout)
            await self.node.rpc("code", "delete", [Atom(COLLECTOR)], timeout=timeout)
            self.out.write("ok\n")
        except DistError as exc:
            self.out.write(
                f"failed ({exc}); until the node restarts, its telemetry handler stays"
                ' attached: :telemetry.detach("chanload-telemetry-collector") removes it\n'
            )
        self.collector = False

    async def memory(self) -> dict[str, int]:
        pairs = await self.node.rpc("erlang", "memory", [], timeout=5)
        return {text(k): v for k, v in pairs}


# -- server-side timing ------------------------------------------------------------


def timing_from_collector(summary: dict) -> ServerTiming:
    """The collector's buckets as a ServerTiming (bucket tops: upper-bound percentiles)."""
    events = {}
    for key, stats in summary.items():
        h = new_histogram()
        low = high = None
        for bucket, n in stats.get("buckets", []):
            top = bucket_top(bucket)
            h.record_value(max(1, top), n)
            low = bucket if low is None else min(low, bucket)
            high = top if high is None else max(high, top)
        count = stats.get("count", 0)
        if not count:
            continue
        pct = h.get_percentile_to_value_dict([50, 95, 99])
        events[text(key)] = EventTiming(
            count=count,
            mean_us=round(stats.get("sum", 0) / count, 1),
            min_us=low or 0,
            max_us=high or 0,
            p50_us=int(pct[50]),
            p95_us=int(pct[95]),
            p99_us=int(pct[99]),
            histogram=h.encode().decode("ascii"),
        )
    return ServerTiming(events, source="Lightning telemetry")


def bucket_top(bucket: int) -> int:
    """The largest value the collector counts in ``bucket`` (3 significant digits above 1 ms).

    Percentiles then read as upper bounds, as HdrHistogram's do on the client side.
    """
    if bucket < 1000:
        return bucket
    return bucket + 10 ** (len(str(bucket)) - 3) - 1


# -- memory -----------------------------------------------------------------------


def beam_probe(session: Session, interval: float) -> MemoryProbe:
    """erlang:memory() of the node: total, plus binary and processes in the series."""

    async def sample() -> dict[str, int]:
        try:
            mem = await session.memory()
        except DistError as exc:
            session.stalled = session.stalled or isinstance(exc, RpcTimeout)
            raise ProbeLost(str(exc)) from None
        return {
            "total": mem.get("total", 0),
            "binary": mem.get("binary", 0),
            "processes": mem.get("processes", 0),
        }

    return MemoryProbe("Lightning BEAM", sample, interval)


async def open_target(config: RunConfig, out: TextIO) -> tuple[Session, Target, int]:
    """Check the sink, join the node, find or create the channel, deploy the collector.

    Returns the session, the target and the number of preflight requests
    made. On failure nothing is left behind on the node.
    """
    sink = config.sink_url()
    await check_sink(sink, out)
    cookie = resolve_cookie(config.cookie)
    session = await Session.connect(config.node_name, cookie, out)
    try:
        channel = await session.ensure_channel(config.channel, config.sink_or_default)
        base = parse_url(config.target, "--target")
        url = base.join(f"/channels/{text(channel['id'])}/test")
        # Through Lightning once, before the collector counts anything.
        await check(
            "channel URL",
            url,
            "Is Lightning serving HTTP at --target, with the channel proxy enabled?",
            out,
        )
        timing = await session.deploy_collector()
        target = Target(
            "lightning",
            url.with_query(config.query_overrides()),
            sink,
            telemetry="enabled" if timing else "disabled (the collector could not be deployed)",
        )
    except BaseException:
        await session.teardown_collector()
        await session.close()
        raise
    return session, target, 2
