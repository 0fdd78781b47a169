"""Where the load goes, and the checks made before any load is sent.

Targets:
- direct: the sink itself at <sink>/test (the direct_sink baseline);
- url: any proxy at an explicit --channel-url;
- lightning: the channel of a Lightning node reached over Erlang
  distribution (engine/lightning.py), with memory and server-side timing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
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
    server_timing: bool = False  # the target's answers carry a Server-Timing header


def resolve(config: RunConfig) -> Target | None:
    """The target of a direct or URL run; None when it is a Lightning node."""
    query = config.query_overrides()
    sink = config.sink_url()
    if config.scenario_spec.direct:
        return Target("direct", sink.join("/test").with_query(query), sink)
    if config.channel_url:
        url = parse_url(config.channel_url, "--channel-url").with_query(query)
        # The sink is checked only when the user named it: a proxy's sink
        # may be anywhere.
        return Target("url", url, sink if config.sink else None)
    return None


class _OneResponse(HttptoolsFramer):
    wants_server_timing = True

    def __init__(self) -> None:
        super().__init__()
        self.status: int | None = None
        self.error: str | None = None
        self.server_timing: bytes | None = None

    def server_timing_seen(self, value: bytes) -> None:
        self.server_timing = value

    def response_complete(self, status, keep_alive, wire_bytes, body_bytes) -> None:
        self.status = status

    def protocol_error(self, message: str) -> None:
        self.error = message


async def http_get(url: HttpUrl, timeout: float = PREFLIGHT_TIMEOUT) -> tuple[int, bytes | None]:
    """GET ``url`` once: the status and any Server-Timing value.

    Raises OSError, TimeoutError or RemoteProtocolError.
    """

    async def exchange() -> tuple[int, bytes | None]:
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
            return framer.status, framer.server_timing
        finally:
            writer.close()

    async with asyncio.timeout(timeout):
        return await exchange()


SINK_HINT = "Start the mock sink first:\n  chansink --port {port}"
CHANNEL_HINT = "Is the proxy running, and is the channel URL right?"


async def check(what: str, url: HttpUrl, hint: str, out: TextIO) -> bool:
    """GET ``url`` once (without its query); TargetError when nothing answers.

    True when the answer carried a Server-Timing header.
    """
    probe = HttpUrl(url.scheme, url.host, url.port, url.path.split("?", 1)[0])
    out.write(f"Checking {what} at {probe}... ")
    out.flush()
    try:
        status, timing = await http_get(probe)
    except (OSError, TimeoutError, RemoteProtocolError) as exc:
        out.write("failed\n")
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {PREFLIGHT_TIMEOUT:g}s"
        raise TargetError(f"could not reach the {what} at {probe}: {reason}", 1, hint) from None
    note = ", Server-Timing" if timing else ""
    if status >= 500:
        out.write(f"warning: status {status}{note}\n")
    else:
        out.write(f"ok (status {status}{note})\n")
    return timing is not None


async def check_sink(sink: HttpUrl, out: TextIO) -> bool:
    return await check("mock sink", sink.join("/"), SINK_HINT.format(port=sink.port), out)


async def preflight(target: Target, out: TextIO) -> tuple[Target, int]:
    """Check what a direct or URL run needs: the target (noting Server-Timing) and requests made."""
    made = 0
    timing = False
    if target.sink is not None:
        timing = await check_sink(target.sink, out) and target.kind == "direct"
        made += 1
    if target.kind == "url":
        timing = await check("channel URL", target.url, CHANNEL_HINT, out)
        made += 1
    if timing:
        target = replace(target, server_timing=True, telemetry="from the Server-Timing header")
    return target, made
