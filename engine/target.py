"""Where the load goes, and the checks made before any load is sent.

Targets:
- direct: the sink itself at <sink>/test (the direct_sink baseline);
- url: any proxy at an explicit --channel-url;
- lightning: a Lightning node over Erlang distribution (its own issue; until
  it lands, asking for it is a usage error, exit 2).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TextIO

from engine.config import HttpUrl, RunConfig, parse_url
from engine.http1 import HttptoolsFramer, RemoteProtocolError, build_request_head

PREFLIGHT_TIMEOUT = 5.0


class TargetError(Exception):
    """The target cannot be used; ``code`` is the exit code (1 runtime, 2 usage)."""

    def __init__(self, message: str, code: int = 1, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Target:
    kind: str  # "direct" | "url" | "lightning"
    url: HttpUrl  # where requests go, query overrides included
    sink: HttpUrl | None  # the sink, when this run knows where it is
    telemetry: str = "disabled"


def resolve(config: RunConfig) -> Target:
    query = config.query_overrides()
    sink = config.sink_url()
    if config.scenario_spec.direct:
        return Target("direct", sink.join("/test").with_query(query), sink)
    if config.channel_url:
        url = parse_url(config.channel_url, "--channel-url").with_query(query)
        # The sink is checked only when the user named it: a proxy's sink
        # may be anywhere.
        return Target("url", url, sink if config.sink else None)
    raise TargetError(
        f"scenario {config.scenario} goes through a channel proxy, and connecting to a"
        f" Lightning node (--node {config.node_name}) is not available in this version",
        code=2,
        hint="Give the proxy's channel URL with --channel-url URL, or measure the sink"
        " alone with --scenario direct_sink.",
    )


class _OneResponse(HttptoolsFramer):
    def __init__(self) -> None:
        super().__init__()
        self.status: int | None = None
        self.error: str | None = None

    def response_complete(self, status, keep_alive, wire_bytes, body_bytes) -> None:
        self.status = status

    def protocol_error(self, message: str) -> None:
        self.error = message


async def http_get(url: HttpUrl, timeout: float = PREFLIGHT_TIMEOUT) -> int:
    """GET ``url`` once; the status code. Raises OSError, TimeoutError or RemoteProtocolError."""

    async def exchange() -> int:
        reader, writer = await asyncio.open_connection(url.host, url.port)
        try:
            writer.write(build_request_head("GET", url.authority, url.path, None, None))
            framer = _OneResponse()
            while framer.status is None:
                data = await reader.read(65536)
                if not data:
                    framer.eof()
                    if framer.status is None:
                        raise RemoteProtocolError("the connection closed before a response")
                    break
                framer.feed(data)
                if framer.error:
                    raise RemoteProtocolError(framer.error)
            return framer.status
        finally:
            writer.close()

    return await asyncio.wait_for(exchange(), timeout)


async def preflight(target: Target, out: TextIO) -> int:
    """Check what the run needs before sending load; the number of requests it made."""
    made = 0
    checks: list[tuple[str, HttpUrl, str]] = []
    if target.sink is not None:
        checks.append(
            (
                "mock sink",
                target.sink,
                f"Start the mock sink first:\n  chansink --port {target.sink.port}",
            )
        )
    if target.kind == "url":
        checks.append(
            ("channel URL", target.url, "Is the proxy running, and is the channel URL right?")
        )
    for what, url, hint in checks:
        base = url if what == "channel URL" else url.join("/")
        probe = HttpUrl(base.scheme, base.host, base.port, base.path.split("?", 1)[0])
        out.write(f"Checking {what} at {probe}... ")
        out.flush()
        made += 1
        try:
            status = await http_get(probe)
        except (OSError, TimeoutError, RemoteProtocolError) as exc:
            out.write("failed\n")
            reason = (
                "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            )
            raise TargetError(f"could not reach the {what} at {probe}: {reason}", 1, hint) from None
        if status >= 500:
            out.write(f"warning: status {status}\n")
        else:
            out.write(f"ok (status {status})\n")
    return made
