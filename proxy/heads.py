"""chanproxy's message heads, as pure functions of what they rewrite.

On the way to the sink a request head is rewritten as Lightning's channel
proxy does (lib/lightning_web/plugs/channel_proxy_plug.ex, through Philter):
the path below /channels/<id>, its dot segments resolved, goes under the
channel's sink path (or nowhere, when they would climb out of it), hop-by-hop
headers, Host, Content-Length and any X-Forwarded-* are replaced, an
X-Request-Id is kept when it looks like one and made otherwise. On the way
back the sink's head loses its hop-by-hop headers and gains Server-Timing.
The framing of each body is decided by the caller and passed in.
"""

from __future__ import annotations

import json
import secrets

from common.bodies import STATUS_LINES

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Replaced on the way to the sink, as Lightning does.
REPLACED = HOP_BY_HOP | {b"host", b"x-request-id", b"content-length"}
# Lightning keeps a client's X-Request-Id of this many bytes (Plug.RequestId).
REQUEST_ID_LENGTHS = range(20, 201)

NOT_FOUND = {"error": "Not Found"}
BAD_GATEWAY = {"error": "Bad Gateway"}
GATEWAY_TIMEOUT = {"error": "Gateway Timeout"}
BAD_REQUEST = {"error": "Bad Request"}
REQUEST_TIMEOUT = {"error": "Request Timeout"}
ERROR_PHRASES = {
    400: "Bad Request",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
}


def sink_target(url: bytes, sink_path: str) -> bytes | None:
    """The request target at the sink: /channels/<id>/REST?Q -> <sink_path>/REST?Q,
    REST's dot segments resolved (channel_path); None when they would climb
    above the channel's root. The query goes as it came."""
    path, _, query = url.partition(b"?")
    rest = path.split(b"/", 3)[3] if path.count(b"/") >= 3 else b""
    below = channel_path(rest)
    if below is None:
        return None
    return sink_path.encode() + below + (b"?" + query if b"?" in url else b"")


def channel_path(rest: bytes) -> bytes | None:
    """``/`` + ``rest`` without its dot segments (RFC 3986 5.2.4, remove_dot_segments),
    or None when a ".." would climb above that first ``/``, the channel's root.

    ``%2e`` and ``%2E`` count as dots here (RFC 3986 2.3: they are the same
    unreserved character), or a sink that decodes them before resolving
    would be walked out of the channel's base path. Other segments are
    passed on exactly as they came.
    """
    slashed = b"/" + rest
    if b"/." not in slashed and b"/%2" not in slashed:
        return slashed  # no segment can be a dot segment: the common case
    out: list[bytes] = []
    dots = b""
    for segment in rest.split(b"/"):
        dots = segment.replace(b"%2e", b".").replace(b"%2E", b".") if b"%" in segment else segment
        if dots == b".":
            continue
        if dots == b"..":
            if not out:
                return None
            out.pop()
            continue
        out.append(segment)
    path = b"/" + b"/".join(out)
    # A path that ends in a dot segment ends in its directory: "a/b/.." is "/a/".
    if out and dots in (b".", b".."):
        path += b"/"
    return path


def upstream_head(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    sink_authority: str,
    peer_ip: bytes,
    body: str | int | None,
    request_id: bytes | None = None,
    scheme: bytes = b"http",
) -> bytes:
    """The request head for the sink, for ``target`` (sink_target's); ``scheme``
    is what the client spoke to us (x-forwarded-proto).

    ``body``: an int is a Content-Length, "chunked" re-frames the body as
    chunked, None sends no framing header. ``request_id`` is the id to use when
    the client sent none that Lightning would keep (random when None).
    """
    forwarded_for = peer_ip
    client_host = b""
    kept_id = None
    lines = [method, b" ", target, b" HTTP/1.1\r\nhost: "]
    lines += [sink_authority.encode(), b"\r\n"]
    for name, value in headers:
        lower = name.lower()
        if lower in REPLACED or lower.startswith(b"x-forwarded-"):
            if lower == b"x-request-id" and len(value) in REQUEST_ID_LENGTHS:
                kept_id = value
            elif lower == b"host":
                client_host = value
            elif lower == b"x-forwarded-for":
                forwarded_for = value + b", " + forwarded_for
            continue
        lines += [name, b": ", value, b"\r\n"]
    if kept_id is None:
        kept_id = request_id or secrets.token_urlsafe(15).encode()
    lines += [
        b"x-forwarded-for: ",
        forwarded_for,
        b"\r\nx-forwarded-host: ",
        client_host,
        b"\r\nx-forwarded-proto: ",
        scheme,
        b"\r\nx-request-id: ",
        kept_id,
        b"\r\n",
    ]
    if body == "chunked":
        lines.append(b"transfer-encoding: chunked\r\n")
    elif isinstance(body, int):
        lines += [b"content-length: ", str(body).encode(), b"\r\n"]
    lines.append(b"\r\n")
    return b"".join(lines)


def response_head_lines(
    status: int,
    headers: list[tuple[bytes, bytes]],
    keep_length: bool,
    lookup_ms: float,
    upstream_ms: float,
    total_ms: float,
) -> list[bytes]:
    """The sink's response head for the client, without its framing and final CRLF.

    Hop-by-hop headers go; the sink's Content-Length stays only when
    ``keep_length`` (the body is passed on exactly as framed); Server-Timing
    says where the time went.
    """
    lines = [STATUS_LINES.get(status, b"HTTP/1.1 %d \r\n" % status)]
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or (lower == b"content-length" and not keep_length):
            continue
        lines += [name, b": ", value, b"\r\n"]
    lines.append(
        b"server-timing: lookup;dur=%.3f, upstream;dur=%.3f, total;dur=%.3f\r\n"
        % (lookup_ms, upstream_ms, total_ms)
    )
    return lines


def json_response(status: int, payload: object, keep_alive: bool = True) -> bytes:
    """A whole response carrying ``payload`` as JSON."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = STATUS_LINES[status] + b"content-type: application/json\r\ncontent-length: %d\r\n" % (
        len(body)
    )
    if not keep_alive:
        head += b"connection: close\r\n"
    return head + b"\r\n" + body


def error_response(status: int) -> bytes:
    """The answer to a request that could not be read: its status, then close."""
    return json_response(status, {"error": ERROR_PHRASES.get(status, "Bad Request")}, False)
