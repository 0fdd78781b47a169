"""A Lightning node for the length of a run: the connection over Erlang
distribution (engine/beam, as a hidden node), the benchmark's channel (through
setup.py), the telemetry collector deployed for the run and removed after it,
and erlang:memory().
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
from engine.lightning.setup import LightningApi, Setup, SetupError, text
from engine.lightning.timing import timing_from_collector
from engine.measure.timing import INBOUND, ServerTiming
from engine.target import TargetError

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
