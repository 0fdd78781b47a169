"""Lightning mode: the node over Erlang distribution, the channel, memory, timing.

What the seed did as a named Elixir node, done as a hidden node from Python
(engine/beam): find or create the benchmark channel, sample the node's memory
from a baseline before the load to a last sample after it, and collect the
channel proxy's server-side timing with a collector deployed for the run and
removed after it, also when the run fails or is interrupted.
"""

from __future__ import annotations

import secrets
import stat
import sys
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from engine.beam.dist import BadRpc, DistError, Node, RpcTimeout
from engine.beam.terms import Atom
from engine.config import RunConfig, parse_url
from engine.lightning_setup import LightningApi, Setup, SetupError, text
from engine.metrics import Recorder, new_histogram
from engine.observers import Observer
from engine.observers.memory import MemoryObserver, MemoryProbe, ProbeLost
from engine.result import RunResult
from engine.target import Target, TargetError, check, check_sink
from engine.timing import INBOUND, EventTiming, ServerTiming

# The channel proxy's spans: the seed's three, and today's outer :inbound
# (lib/lightning_web/plugs/channel_proxy_plug.ex). A node that never emits
# one just leaves it out of the summary.
EVENTS = [
    [Atom("lightning"), Atom("channel_proxy"), Atom(name)]
    for name in (INBOUND, "request", "fetch_channel", "upstream")
]
COLLECTOR = "Elixir.Chanload.TelemetryCollector.R{run}"
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


class Session:
    """One Lightning node, for the length of a run."""

    def __init__(self, node: Node, out: TextIO) -> None:
        self.node = node
        self.out = out
        self.setup = Setup(self.rpc, out)
        self.channel: dict | None = None
        self.collector = False
        # This run's own collector: module, table and handler carry the id,
        # so runs against the same node never remove each other's.
        self.run_id = secrets.token_hex(4)
        self.collector_module = COLLECTOR.format(run=self.run_id)
        self.handler_id = f"chanload-telemetry-{self.run_id}"
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

    async def detect_api(self) -> LightningApi:
        self.out.write("Asking the node for its channel API... ")
        self.out.flush()
        try:
            api = await self.setup.detect()
        except SetupError as exc:
            self.out.write("unknown\n")
            raise LightningError(str(exc), exc.hint) from None
        self.out.write(f"{api.describe()}\n")
        return api

    async def ensure_channel(self, name: str, sink_url: str, repoint: bool = False) -> dict:
        try:
            channel = await self.setup.ensure_channel(name, sink_url, repoint)
        except SetupError as exc:
            raise LightningError(str(exc), exc.hint) from None
        self.channel = channel
        return channel

    def describe(self) -> dict[str, Any]:
        """What the run used on the node, for the JSON result."""
        api = self.setup.api
        channel = self.channel or {}
        field = api.destination_field if api else "destination_url"
        return {
            **(api.as_dict() if api else {}),
            "node": self.node.remote,
            "channel": {
                "id": text(channel.get("id", "")),
                "name": text(channel.get("name", "")),
                "destination": text(channel.get(field, "")),
                "project_id": text(channel.get("project_id", "")),
            },
            "collector": self.collector_module if self.collector else None,
            "events": [text(e[-1]) for e in EVENTS],
        }

    # -- the telemetry collector -------------------------------------------------

    async def deploy_collector(self) -> bool:
        self.out.write("Deploying telemetry collector... ")
        self.out.flush()
        source = resources.files("engine.beam").joinpath("collector.exs").read_text()
        source = source.replace("RUNID", self.run_id)
        try:
            await self.node.rpc("Elixir.Code", "eval_string", [source], timeout=30)
            await self.node.rpc(self.collector_module, "start", [EVENTS], timeout=10)
        except DistError as exc:
            self.out.write(f"failed, timing disabled ({exc})\n")
            return False
        self.collector = True
        self.out.write("ok\n")
        return True

    async def reset_collector(self) -> None:
        if self.collector:
            await self.node.rpc(self.collector_module, "reset", [], timeout=10)

    async def collect_timing(self) -> ServerTiming | None:
        if not self.collector:
            return None
        try:
            summary = await self.node.rpc(
                self.collector_module,
                "summary",
                [],
                timeout=STALLED_TIMEOUT if self.stalled else 15,
            )
        except DistError as exc:
            self.stalled = self.stalled or isinstance(exc, RpcTimeout)
            return ServerTiming(lost=str(exc), source="Lightning telemetry")
        return timing_from_collector(summary)

    async def teardown_collector(self) -> None:
        if not self.collector:
            return
        self.collector = False
        if self.node.lost is not None:
            self.out.write(
                f"The node went away before the telemetry collector was removed ({self.node.lost})."
                f"\n{self.detach_instructions()}\n"
            )
            return
        self.out.write("Tearing down telemetry collector... ")
        timeout = STALLED_TIMEOUT if self.stalled else 10
        module = Atom(self.collector_module)
        try:
            await self.node.rpc(self.collector_module, "stop", [], timeout=timeout)
            await self.node.rpc("code", "purge", [module], timeout=timeout)
            await self.node.rpc("code", "delete", [module], timeout=timeout)
            self.out.write("ok\n")
        except DistError as exc:
            self.out.write(f"failed ({exc})\n{self.detach_instructions()}\n")

    async def remove_collectors(self) -> list[str]:
        """Remove every chanload collector left on the node (runs that never tore down)."""
        removed = []
        prefix = "Elixir.Chanload.TelemetryCollector"  # earlier versions' unnumbered one too
        loaded = await self.rpc("code", "all_loaded", [])
        for module, _file in loaded:
            if text(module).startswith(prefix):
                await self.rpc(text(module), "stop", [])
                await self.rpc("code", "purge", [module])
                await self.rpc("code", "delete", [module])
                removed.append(f"telemetry collector {text(module).removeprefix('Elixir.')}")
        handlers = await self.rpc(
            "telemetry", "list_handlers", [[Atom("lightning"), Atom("channel_proxy")]]
        )
        for handler_id in sorted({text(h["id"]) for h in handlers}):
            if handler_id.startswith("chanload-telemetry-"):
                await self.rpc("telemetry", "detach", [handler_id])
                removed.append(f"telemetry handler {handler_id}")
        return removed

    def detach_instructions(self) -> str:
        """How to remove this run's collector by hand, should the node still have it."""
        return (
            "  If the node is still running, its telemetry handler stays attached until it\n"
            "  restarts; to remove it, in the node's console (iex):\n"
            f'    :telemetry.detach("{self.handler_id}")\n'
            f"    {self.collector_module.removeprefix('Elixir.')}.stop()\n"
            "  or run `chanload lightning cleanup` with the same --node and --cookie."
        )

    async def memory(self) -> dict[str, int]:
        pairs = await self.node.rpc("erlang", "memory", [], timeout=5)
        return {text(k): v for k, v in pairs}


# -- server-side timing ------------------------------------------------------------


def timing_from_collector(summary: dict) -> ServerTiming:
    """The collector's buckets as a ServerTiming (bucket tops: upper-bound percentiles).

    ``summary`` is ``%{events: %{event => stats}, unresolved: %{outcome => n}}``.
    """
    events = {}
    for key, stats in (summary.get("events") or {}).items():
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
    unresolved = {text(k): n for k, n in (summary.get("unresolved") or {}).items()}
    # Only a node that emits :inbound can tell requests answered without a channel.
    knows = INBOUND in events or bool(unresolved)
    return ServerTiming(
        events, source="Lightning telemetry", unresolved=unresolved if knows else None
    )


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


class CollectorObserver(Observer):
    """The telemetry collector: reset before each load, summarised after it;
    torn down with the session when the run is over."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.timing: ServerTiming | None = None

    async def before(self, config: RunConfig) -> None:
        self.timing = None
        await self.session.reset_collector()

    async def after(self, recorder: Recorder) -> None:
        self.timing = await self.session.collect_timing()

    def report(self, result: RunResult) -> None:
        if self.timing is not None:
            result.server_timing = self.timing.as_dict()
        result.lightning = self.session.describe()

    async def close(self) -> None:
        try:
            await self.session.teardown_collector()
        finally:
            await self.session.close()


def observers(session: Session) -> list[Observer]:
    """A Lightning run's observers: the collector, then the node's memory."""
    return [
        CollectorObserver(session),
        MemoryObserver(lambda interval: beam_probe(session, interval)),
    ]


async def open_target(config: RunConfig, out: TextIO) -> tuple[Session, Target, int]:
    """Check the sink, join the node, find or create the channel, deploy the collector.

    Returns the session, the target and the number of preflight requests
    made. On failure nothing is left behind on the node.
    """
    sink = config.sink_url()
    headers = config.header_pairs
    await check_sink(sink, out, headers)
    cookie = resolve_cookie(config.cookie)
    session = await Session.connect(config.node_name, cookie, out)
    try:
        api = await session.detect_api()
        channel = await session.ensure_channel(
            config.channel, config.sink_or_default, config.repoint_channel
        )
        base = parse_url(config.target, "--target")
        url = base.join(f"/channels/{text(channel['id'])}/test")
        # Through Lightning once, before the collector counts anything; a
        # refusal (401, egress 403, 404) ends the run here, explained.
        await check(
            "channel URL",
            url,
            "Is Lightning serving HTTP at --target, with the channel proxy enabled?",
            out,
            headers,
            refusals=True,
        )
        timing = await session.deploy_collector()
        target = Target(
            "lightning",
            url.with_query(config.query_overrides()),
            sink,
            telemetry="enabled" if timing else "disabled (the collector could not be deployed)",
            description=f"{api.describe()}, node {config.node_name}",
        )
    except BaseException:
        await session.teardown_collector()
        await session.close()
        raise
    return session, target, 2


async def cleanup(config: RunConfig, out: TextIO) -> list[str]:
    """Remove what chanload created on the node (channels, project, user); what it removed."""
    cookie = resolve_cookie(config.cookie)
    session = await Session.connect(config.node_name, cookie, out)
    try:
        await session.detect_api()
        out.write("Removing what chanload created... ")
        out.flush()
        try:
            removed = await session.setup.cleanup(config.channel)
        except SetupError as exc:
            out.write("failed\n")
            raise LightningError(str(exc), exc.hint) from None
        out.write("done\n")
        collectors = await session.remove_collectors()
    finally:
        await session.close()
    return removed + collectors
