"""chansink: the mock downstream service (the seed's mock_sink.exs)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli import servers
from cli.errors import fail, run_app
from cli.servers import (
    BodyTimeoutOption,
    CongestionOption,
    HeaderTimeoutOption,
    HostOption,
    PortOption,
    TlsCertOption,
    TlsKeyOption,
    idle_timeout_option,
    server_app,
    version_option,
)
from common import tcp
from sink.config import (
    DEFAULT_BODY_SIZE,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_GRACE_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_PORT,
    DEFAULT_STATUS,
    ConfigError,
    Mode,
    SinkConfig,
)
from sink.server import serve

HELP = """\
A mock downstream HTTP service for benchmarking a channel proxy.

Answers any method on any path according to --mode:

  fixed    --status with a --body-size body (the default)
  timeout  accepts and reads requests, never answers, holds the connection
  auth     401 without Authorization, 403 when wrong, 400 when repeated,
           200 for "Bearer test-api-key" (compared in constant time)
  mixed    80% fast 200, 10% 200 after 2 s, 10% 503

Per-request query overrides (combinable; an invalid value is ignored):

  ?response_size=N  body of exactly N bytes instead of --body-size
  ?delay=N          answer after N ms (other connections are not held up);
                    in mixed mode, on top of the slow answers' 2 s
  ?status=N         status N (100-599) instead of --status (fixed mode)
  ?chunked=1|0      chunked transfer encoding on or off for this answer

Bodies of up to 1024 bytes are a JSON document of exactly N bytes
(application/json); larger ones are N filler bytes (application/octet-stream),
streamed from one preallocated buffer. Request bodies of any size are read and
discarded as they arrive. A 1xx status is sent as a bare interim response,
after which the connection is closed.

Prints a summary line each second with activity (or, with --access-log, one
line per request), and the totals when stopped by Ctrl-C or SIGTERM.
"""

app = server_app()
VersionOption = version_option("chansink")
IdleTimeoutOption = idle_timeout_option(
    " (not in timeout mode, which holds connections on purpose)"
)


@app.command(help=HELP)
def chansink(
    host: HostOption = DEFAULT_HOST,
    port: PortOption = DEFAULT_PORT,
    mode: Annotated[Mode, typer.Option(help="How to answer (see above).")] = Mode.fixed,
    status: Annotated[
        int, typer.Option(min=100, max=599, help="Status code of fixed-mode answers.")
    ] = DEFAULT_STATUS,
    body_size: Annotated[
        int, typer.Option(min=0, help="Response body size in bytes.")
    ] = DEFAULT_BODY_SIZE,
    chunked: Annotated[
        bool, typer.Option(help="Send bodies with Transfer-Encoding: chunked.")
    ] = False,
    sendfile: Annotated[
        bool,
        typer.Option(
            help="Send large bodies with sendfile(2) from an in-memory file (no copy);"
            " --no-sendfile copies them from a buffer instead."
        ),
    ] = True,
    access_log: Annotated[
        bool,
        typer.Option(
            help="Print one line per request (as the seed did) instead of a summary per second."
        ),
    ] = False,
    seed: Annotated[
        int | None, typer.Option(help="Random seed for mixed mode, for repeatable runs.")
    ] = None,
    grace: Annotated[
        float,
        typer.Option(min=0, help="Seconds in-flight answers get to finish on Ctrl-C/SIGTERM."),
    ] = DEFAULT_GRACE_S,
    header_timeout: HeaderTimeoutOption = DEFAULT_HEADER_TIMEOUT_S,
    body_timeout: BodyTimeoutOption = DEFAULT_BODY_TIMEOUT_S,
    idle_timeout: IdleTimeoutOption = DEFAULT_IDLE_TIMEOUT_S,
    congestion: CongestionOption = tcp.AUTO,
    memo: Annotated[
        bool,
        typer.Option(
            help="Answer a request that arrives again byte for byte (a load generator's"
            " repeats) from a memo, without parsing it; --no-memo parses every request."
            " The totals line counts memo_hits."
        ),
    ] = True,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    version: VersionOption = None,
) -> None:
    try:
        config = SinkConfig(
            tls_cert=tls_cert,
            tls_key=tls_key,
            host=host,
            port=port,
            mode=mode,
            status=status,
            body_size=body_size,
            chunked=chunked,
            sendfile=sendfile,
            access_log=access_log,
            seed=seed,
            grace=grace,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            idle_timeout=idle_timeout,
            congestion=congestion,
            memo=memo,
        )
    except ConfigError as exc:
        raise fail("chansink", str(exc), 2) from None
    servers.serve("chansink", serve(config))


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_app(app, "chansink", argv))


if __name__ == "__main__":
    main()
