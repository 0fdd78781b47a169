"""chanproxy's admin endpoint: list and create channels.

    GET  /_admin/channels   every channel, as JSON
    POST /_admin/channels   {"name", "sink_url", "id"?, "enabled"?} -> 201 and the channel

Who may call it. A channel decides where chanproxy sends what it receives,
so the endpoint is guarded against everything that can reach a loopback
port: the peer must be on loopback (403); the Host header must name
loopback (403: a page whose DNS name was rebound to 127.0.0.1 sends its own
name); the admin token (random at each start and printed in the banner, or
--admin-token) must be in an ``X-Admin-Token`` header (401: a web page
cannot add one without a CORS preflight chanproxy never grants); and a POST
must be ``Content-Type: application/json`` (415: what a page's form or
``fetch`` may send without a preflight is text/plain and the like). An
existing id is never replaced (409). Every bad input gets a 4xx answer.
"""

from __future__ import annotations

import hmac
import ipaddress
import json

from proxy.heads import NOT_FOUND
from proxy.registry import ChannelError, ChannelExists, Registry

PREFIX = b"/_admin/"
BODY_MAX = 64 * 1024  # a larger body gets 413 (the rest is read and dropped)
TOKEN_HEADER = b"x-admin-token"


def is_admin(path: bytes) -> bool:
    return path.startswith(PREFIX)


def loopback_host(host: bytes) -> bool:
    """Whether a Host header names this machine's loopback (``localhost``,
    127.0.0.0/8, ``[::1]``), with or without a port."""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        name = text[1 : text.find("]")] if "]" in text else ""
    else:
        name = text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def answer(
    registry: Registry,
    token: str,
    loopback: bool,
    method: bytes,
    url: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes | None,
) -> tuple[int, object]:
    """(status, JSON payload) of an admin request. ``body`` is None when it was
    larger than BODY_MAX."""
    if not loopback:
        return 403, {"error": "the admin endpoint answers loopback clients only"}
    host = _header(headers, b"host")
    if host is None or not loopback_host(host):
        return 403, {"error": "the admin endpoint answers requests for a loopback Host only"}
    given = _header(headers, TOKEN_HEADER) or b""
    if not token or not hmac.compare_digest(given, token.encode()):
        return 401, {"error": "give the admin token (chanproxy's banner) in X-Admin-Token"}
    path = url.split(b"?", 1)[0]
    if path != b"/_admin/channels":
        return 404, NOT_FOUND
    if method == b"GET":
        return 200, [c.as_dict() for c in registry.all()]
    if method != b"POST":
        return 405, {"error": "use GET or POST"}
    media = (_header(headers, b"content-type") or b"").split(b";", 1)[0].strip().lower()
    if media != b"application/json":
        return 415, {"error": "the body must be Content-Type: application/json"}
    if body is None:
        return 413, {"error": f"the body must be at most {BODY_MAX} bytes"}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        return 400, {"error": f"the body is not valid JSON ({type(exc).__name__})"}
    try:
        name, sink_url, channel_id, enabled = _fields(data)
        channel = registry.add(name, sink_url, channel_id=channel_id, enabled=enabled)
    except ChannelExists as exc:
        return 409, {"error": str(exc)}
    except ChannelError as exc:
        return 422, {"error": str(exc)}
    return 201, channel.as_dict()


def _fields(data: object) -> tuple[str, str, str | None, bool]:
    if not isinstance(data, dict):
        raise ChannelError("expected a JSON object")
    name, sink_url = data.get("name"), data.get("sink_url")
    channel_id, enabled = data.get("id"), data.get("enabled", True)
    if not isinstance(name, str) or not isinstance(sink_url, str):
        raise ChannelError("name and sink_url must be strings")
    if channel_id is not None and not isinstance(channel_id, str):
        raise ChannelError("id must be a string (a UUID)")
    if not isinstance(enabled, bool):
        raise ChannelError("enabled must be true or false")
    return name, sink_url, channel_id, enabled
