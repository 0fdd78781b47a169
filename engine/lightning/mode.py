"""Lightning mode: what the seed did as a named Elixir node, done from Python.

open_target checks the sink, joins the node, finds or creates the benchmark
channel and deploys the collector; the run's observers are the collector and
the node's memory, from a baseline before the load to a last sample after it;
cleanup removes what chanload created. Also when a run fails or is
interrupted, the collector is removed (CollectorObserver.close).
"""

from __future__ import annotations

from typing import TextIO

from engine.beam.dist import DistError, RpcTimeout
from engine.config import RunConfig, parse_url
from engine.lightning.session import LightningError, Session, resolve_cookie
from engine.lightning.setup import SetupError, text
from engine.measure.metrics import Recorder
from engine.measure.result import RunResult
from engine.measure.timing import ServerTiming
from engine.observers import Observer
from engine.observers.memory import MemoryObserver, MemoryProbe, ProbeLost
from engine.target import Target, check, check_sink

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
    await check_sink(sink, out, headers, config.tls)
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
            tls=config.tls,
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
