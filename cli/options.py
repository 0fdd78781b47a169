"""Options `chanload run`, `suite` and `lightning cleanup` share: one declaration,
one help text each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.config import DEFAULT_SINK

HeaderOption = Annotated[
    list[str] | None,
    typer.Option(
        "-H",
        "--header",
        help="A header sent with every request (and the preflight), as 'Name: value';"
        " repeatable. E.g. -H 'x-api-key: KEY' for a channel with client authentication."
        " Host, Content-Length and Transfer-Encoding cannot be set. Values of"
        " Authorization, X-Api-Key and Cookie are never printed.",
        show_default=False,
    ),
]
ExpectStatusOption = Annotated[
    str,
    typer.Option(
        help="Statuses that count as successes, e.g. '200-299,401'; every other response"
        " is a failed request (an error), as k6's http_req_failed.",
    ),
]
SinkOption = Annotated[
    str | None,
    typer.Option(
        "--sink",
        "--destination",
        help=f"Mock sink URL: direct_sink's target, and where a Lightning channel forwards"
        f" (--destination is today's Lightning's name for it) \\[default: {DEFAULT_SINK}].",
        show_default=False,
    ),
]
NodeOption = Annotated[
    str | None, typer.Option(help="Lightning node name \\[default: lightning@<hostname>].")
]
CookieOption = Annotated[
    str | None,
    typer.Option(
        help="Erlang cookie (else $CHANLOAD_COOKIE, else ~/.erlang.cookie). Never printed."
    ),
]
RepointOption = Annotated[
    bool,
    typer.Option(
        help="Lightning: when the channel found forwards elsewhere than --sink, point it at"
        " --sink (without it, chanload stops and says where it forwards)."
    ),
]

CaFileOption = Annotated[
    Path | None,
    typer.Option(
        help="https: trust the CA certificates in this PEM file (a private CA) instead of"
        " the system's.",
        show_default=False,
    ),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        help="https: verify no certificate and no host name (as curl -k). Said in the"
        " banner and recorded in the JSON.",
    ),
]
TargetOption = Annotated[str, typer.Option(help="Lightning base URL (http:// or https://).")]
TimeoutOption = Annotated[
    float, typer.Option(help="Seconds a request may take before it counts as a timeout.")
]
ParserOption = Annotated[
    str,
    typer.Option(
        help="Response parser: httptools (fast) or h11 (strict, several times the CPU"
        " per response)."
    ),
]
MemoOption = Annotated[
    bool,
    typer.Option(
        help="Count a response that arrives again byte for byte (a server's repeated answer)"
        " from a memo, without parsing it; the JSON's memo_hits says how many were."
        " --no-memo parses every response: what chanload costs when every response differs"
        " (a proxy's request ids).",
    ),
]
MemoryLadderOption = Annotated[
    float,
    typer.Option(
        metavar="SECONDS",
        help="With a memory probe (Lightning, --target-pid) and large bodies: before the"
        " load, drive 1 VU, half the VUs and all of them this many seconds each, and judge"
        " streaming vs buffering by whether the peak growth follows the bodies in flight"
        " (a cold proxy's warm-up does not). 0: no ladder, the seed's one-figure rule.",
    ),
]
TargetPidOption = Annotated[
    int | None,
    typer.Option(
        help="Sample the RSS of this process and its children during the run"
        " (the proxy's memory, for any proxy)."
    ),
]
