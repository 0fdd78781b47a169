"""chanproxy's admin endpoint, loopback clients only: list and create channels.

    GET  /_admin/channels   every channel, as JSON
    POST /_admin/channels   {"name", "sink_url", "id"?, "enabled"?} -> 201 and the channel
"""

from __future__ import annotations

import json

from proxy.heads import NOT_FOUND
from proxy.registry import ChannelError, Registry

PREFIX = b"/_admin/"
BODY_MAX = 64 * 1024  # what of a request body is kept (the rest is read and dropped)


def is_admin(path: bytes) -> bool:
    return path.startswith(PREFIX)


def answer(
    registry: Registry, loopback: bool, method: bytes, url: bytes, body: bytes
) -> tuple[int, object]:
    """(status, JSON payload) of an admin request."""
    if not loopback:
        return 403, {"error": "the admin endpoint answers loopback clients only"}
    path = url.split(b"?", 1)[0]
    if path != b"/_admin/channels":
        return 404, NOT_FOUND
    if method == b"GET":
        return 200, [c.as_dict() for c in registry.all()]
    if method != b"POST":
        return 405, {"error": "use GET or POST"}
    try:
        data = json.loads(body or b"{}")
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        channel = registry.add(
            str(data.get("name", "")),
            str(data.get("sink_url", "")),
            channel_id=data.get("id"),
            enabled=bool(data.get("enabled", True)),
        )
    except (ValueError, ChannelError) as exc:
        return 422, {"error": str(exc)}
    return 201, channel.as_dict()
