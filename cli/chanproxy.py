"""chanproxy: a small reference channel proxy (/channels/<id>/*path -> the channel's sink)."""

from __future__ import annotations

import secrets
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
from proxy.config import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_HOST,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_PORT,
    DEFAULT_UPSTREAM_TIMEOUT,
    ConfigError,
    ProxyConfig,
)
from proxy.registry import ChannelError, Registry
from proxy.server import serve

HELP = """\
A reference channel proxy, as Lightning's /channels/:id/*path route behaves.

Forwards any method on /channels/<uuid>/<path>?<query> to the channel's sink
URL + /<path>?<query>, streaming request and response bodies both ways under
flow control (memory stays flat for any body size), over keep-alive
connections pooled per sink. Sets x-forwarded-for/-host/-proto and
x-request-id as Lightning does, and reports where its time goes in a
Server-Timing header on every response (lookup, upstream, total; ms; measured
up to the response head).

The . and .. segments of <path> are resolved first (RFC 3986; %2e counts as
a dot): a path that would climb above the channel gets 400 {"error":"Bad
Request"} and never reaches the sink.

Unknown or disabled channels get 404 {"error":"Not Found"}; an unreachable
sink 502 {"error":"Bad Gateway"}; a sink slower than --upstream-timeout 504.

Channels come from --channels FILE (a JSON list of {"name", "sink_url", "id"?,
"enabled"?}) and/or the admin endpoint:

  POST /_admin/channels {"name": "...", "sink_url": "http://..."}  -> 201 {"id": ...}
  GET  /_admin/channels                                           -> the list

It answers loopback clients asking for a loopback Host only, with the admin
token in an X-Admin-Token header (a random one is printed at start, or give
--admin-token), a POST as Content-Type: application/json; an existing id is
never replaced (409).

--buffer reads whole request and response bodies into memory before
forwarding them: a deliberately bad proxy, the control for memory verdicts.
"""

app = server_app()
VersionOption = version_option("chanproxy")
IdleTimeoutOption = idle_timeout_option()


@app.command(help=HELP)
def chanproxy(
    host: HostOption = DEFAULT_HOST,
    port: PortOption = DEFAULT_PORT,
    channels: Annotated[
        str | None, typer.Option(help="JSON file of channels to serve from the start.")
    ] = None,
    buffer: Annotated[
        bool, typer.Option(help="Buffer whole bodies in memory (a deliberately bad proxy).")
    ] = False,
    upstream_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the sink's response head before 504.")
    ] = DEFAULT_UPSTREAM_TIMEOUT,
    header_timeout: HeaderTimeoutOption = DEFAULT_HEADER_TIMEOUT,
    body_timeout: BodyTimeoutOption = DEFAULT_BODY_TIMEOUT,
    idle_timeout: IdleTimeoutOption = DEFAULT_IDLE_TIMEOUT,
    congestion: CongestionOption = tcp.AUTO,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="CHANPROXY_ADMIN_TOKEN",
            show_envvar=True,
            help="The admin endpoint's token (else a random one, printed at start);"
            " prefer the environment variable: a command line shows in ps.",
        ),
    ] = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    upstream_ca_file: Annotated[
        str | None,
        typer.Option(
            help="https sinks: trust the CA certificates in this PEM file instead of the system's.",
            show_default=False,
        ),
    ] = None,
    version: VersionOption = None,
) -> None:
    try:
        config = ProxyConfig(
            tls_cert=tls_cert,
            tls_key=tls_key,
            upstream_ca_file=upstream_ca_file,
            admin_token=admin_token or secrets.token_urlsafe(24),
            admin_token_given=bool(admin_token),
            host=host,
            port=port,
            channels_file=channels,
            buffer=buffer,
            upstream_timeout=upstream_timeout,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            idle_timeout=idle_timeout,
            congestion=congestion,
        )
        registry = Registry.from_file(channels) if channels else Registry()
    except (ConfigError, ChannelError) as exc:
        raise fail("chanproxy", str(exc), 2) from None
    servers.serve("chanproxy", serve(config, registry))


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_app(app, "chanproxy", argv))


if __name__ == "__main__":
    main()
