"""Where the load goes, and the checks made before any load is sent.

Targets:
- direct: the sink itself at <sink>/test (the direct_sink baseline);
- url: any proxy at an explicit --channel-url;
- lightning: the channel of a Lightning node reached over Erlang
  distribution (engine/lightning/), with memory and server-side timing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import TextIO

import httptools

from engine.config import HttpUrl, RunConfig, parse_url
from engine.http import tls as tls_mod
from engine.http.http1 import RemoteProtocolError, build_request_head
from engine.http.tls import VERIFY, TlsSettings

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
    description: str = ""  # what the banner says of it beyond the URL (Lightning: the API)


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


# What the preflight keeps of an answer's body: enough for an error message.
PREFLIGHT_BODY_MAX = 4096


@dataclass(frozen=True, slots=True)
class Answer:
    """One response to a preflight GET."""

    status: int
    server_timing: bytes | None = None
    body: bytes = b""  # its first PREFLIGHT_BODY_MAX bytes, de-chunked


class _OneResponse:
    """httptools callbacks for one response: status, Server-Timing, the body's start."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done = False
        self.head_done = False
        self.server_timing: bytes | None = None
        self.body = bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"server-timing":
            self.server_timing = value

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        room = PREFLIGHT_BODY_MAX - len(self.body)
        if room > 0:
            self.body += body[:room]

    def on_message_complete(self) -> None:
        self.done = True

    def answer(self) -> Answer:
        return Answer(self.parser.get_status_code(), self.server_timing, bytes(self.body))


class TlsFailed(OSError):
    """The TLS handshake failed; the message names the cause (engine/http/tls.py)."""


async def http_get(
    url: HttpUrl,
    headers: tuple[tuple[str, str], ...] = (),
    timeout: float = PREFLIGHT_TIMEOUT,
    tls: TlsSettings = VERIFY,
) -> Answer:
    """GET ``url`` once (with ``headers``): its status, Server-Timing and body's start.

    Raises OSError (ssl.SSLError for a failed TLS handshake), TimeoutError or
    RemoteProtocolError.
    """
    context = tls_mod.context_for(url.scheme, tls)
    handshaking = False

    async def exchange() -> Answer:
        nonlocal handshaking
        reader, writer = await asyncio.open_connection(url.host, url.port)
        try:
            if context is not None:
                handshaking = True
                try:
                    await writer.start_tls(context, server_hostname=url.host)
                except OSError as exc:  # ssl.SSLError too
                    raise TlsFailed(tls_mod.classify(exc, url.authority)[1]) from None
                handshaking = False
            writer.write(
                build_request_head("GET", url.authority, url.path, None, None, list(headers))
            )
            one = _OneResponse()
            while not one.done:
                data = await reader.read(65536)
                try:
                    if not data:  # a close-delimited body ends here; no head: no answer
                        if not one.head_done:
                            raise RemoteProtocolError("the connection closed before a response")
                        break
                    one.parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    break
                except httptools.HttpParserError as exc:
                    raise RemoteProtocolError(f"malformed response: {exc}") from None
            return one.answer()
        finally:
            writer.close()

    try:
        async with asyncio.timeout(timeout):
            return await exchange()
    except TimeoutError:
        if handshaking:
            raise TimeoutError(f"the TLS handshake did not finish within {timeout:g}s") from None
        raise


SINK_HINT = "Start the mock sink first:\n  chansink --port {port}"
CHANNEL_HINT = "Is the proxy running, and is the channel URL right?"
# Lightning's answers when it will not proxy (lib/lightning_web/plugs/channel_proxy_plug.ex,
# and Philter's egress policy, lib/philter.ex): what each means and what to do.
EGRESS_MESSAGE = b"Request blocked by egress policy"
REFUSALS = {
    401: (
        "the channel wants client authentication (401)",
        "The channel has client auth methods: pass the credential with every request,\n"
        "  --header 'x-api-key: KEY'                     (an API key method), or\n"
        "  --header 'Authorization: Basic BASE64(user:password)'   (a basic auth method).",
    ),
    404: (
        "no such channel (404)",
        "The channel is unknown or disabled: check the id in the URL (Lightning: the\n"
        "channel exists and is enabled; chanload enables the channel it finds by name).",
    ),
}
EGRESS_REFUSAL = (
    "the proxy refused to forward to the channel's destination (403: egress policy)",
    "Lightning blocks destinations on private and loopback networks by default.\n"
    "Start it with CHANNEL_BLOCK_PRIVATE_NETWORKS=false, or with\n"
    "CHANNEL_ALLOWED_HOSTS=<the --sink host> (an exact host name: 'localhost' does\n"
    "not allow 127.0.0.1; Lightning's config/dev.exs allows 'localhost' only, so in\n"
    "dev use --sink http://localhost:PORT).",
)


def refusal(answer: Answer) -> tuple[str, str] | None:
    """(what, hint) when ``answer`` is the proxy refusing the channel, else None."""
    if answer.status == 403 and EGRESS_MESSAGE in answer.body:
        return EGRESS_REFUSAL
    return REFUSALS.get(answer.status)


async def check(
    what: str,
    url: HttpUrl,
    hint: str,
    out: TextIO,
    headers: tuple[tuple[str, str], ...] = (),
    refusals: bool = False,
    tls: TlsSettings = VERIFY,
) -> bool:
    """GET ``url`` once (without its query); TargetError when nothing answers.

    With ``refusals`` (the channel URL), a 401, a 404 or an egress 403 is a
    TargetError too, explained. True when the answer carried a Server-Timing
    header.
    """
    probe = HttpUrl(url.scheme, url.host, url.port, url.path.split("?", 1)[0])
    out.write(f"Checking {what} at {probe}... ")
    out.flush()
    try:
        answer = await http_get(probe, headers, tls=tls)
    except (OSError, TimeoutError, RemoteProtocolError) as exc:
        out.write("failed\n")
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = str(exc) or f"no answer within {PREFLIGHT_TIMEOUT:g}s"
        if isinstance(exc, TlsFailed):
            hint = ""  # the reason says what to do
        raise TargetError(f"could not reach the {what} at {probe}: {reason}", 1, hint) from None
    note = ", Server-Timing" if answer.server_timing else ""
    if refusals and (refused := refusal(answer)) is not None:
        out.write(f"refused (status {answer.status})\n")
        problem, explained = refused
        body = answer.body[:200].decode("utf-8", "replace").strip()
        raise TargetError(
            f"{what} {probe}: {problem}" + (f": {body}" if body else ""), 1, explained
        )
    if answer.status >= 500:
        out.write(f"warning: status {answer.status}{note}\n")
    else:
        out.write(f"ok (status {answer.status}{note})\n")
    return answer.server_timing is not None


async def check_sink(
    sink: HttpUrl,
    out: TextIO,
    headers: tuple[tuple[str, str], ...] = (),
    tls: TlsSettings = VERIFY,
) -> bool:
    hint = SINK_HINT.format(port=sink.port)
    return await check("mock sink", sink.join("/"), hint, out, headers, tls=tls)


async def preflight(
    target: Target,
    out: TextIO,
    headers: tuple[tuple[str, str], ...] = (),
    tls: TlsSettings = VERIFY,
) -> tuple[Target, int]:
    """Check what a direct or URL run needs: the target (noting Server-Timing) and requests made."""
    made = 0
    timing = False
    if target.sink is not None:
        timing = await check_sink(target.sink, out, headers, tls) and target.kind == "direct"
        made += 1
    if target.kind == "url":
        timing = await check(
            "channel URL", target.url, CHANNEL_HINT, out, headers, refusals=True, tls=tls
        )
        made += 1
    if timing:
        target = replace(target, server_timing=True, telemetry="from the Server-Timing header")
    return target, made
