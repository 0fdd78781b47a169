"""Channels: id -> sink URL, from a JSON file or the loopback admin endpoint."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit


class ChannelError(ValueError):
    """A channel definition that cannot work."""


class ChannelExists(ChannelError):
    """A channel with this id is there already (it is never replaced)."""


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    name: str
    sink_url: str
    enabled: bool = True

    @property
    def sink_host(self) -> str:
        return urlsplit(self.sink_url).hostname or ""

    @property
    def sink_port(self) -> int:
        parts = urlsplit(self.sink_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def sink_tls(self) -> bool:
        return urlsplit(self.sink_url).scheme == "https"

    @property
    def sink_key(self) -> tuple[str, int, bool]:
        """Which of the pool's keep-alive connections serve this channel's sink."""
        return (self.sink_host, self.sink_port, self.sink_tls)

    @property
    def sink_authority(self) -> str:
        """Host (and port, unless the scheme's default), as a Host header says it."""
        parts = urlsplit(self.sink_url)
        return parts.netloc.rpartition("@")[2]

    @property
    def sink_path(self) -> str:
        """The sink URL's path without its trailing slash (the proxied path is appended)."""
        return urlsplit(self.sink_url).path.rstrip("/")

    def as_dict(self) -> dict:
        return asdict(self)


def check_sink_url(url: str) -> None:
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ChannelError(f"sink_url {url!r} must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ChannelError(f"sink_url {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ChannelError(
            f"sink_url {url!r} must be an absolute http:// or https:// URL with a host"
        )


def canonical_id(value: str) -> str | None:
    """The channel id as Lightning casts it (Ecto.UUID), or None when it is not a UUID."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


class Registry:
    def __init__(self) -> None:
        self._by_id: dict[str, Channel] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, channel_id: str) -> Channel | None:
        channel = self._by_id.get(channel_id)
        if channel is None:
            key = canonical_id(channel_id)
            channel = self._by_id.get(key) if key else None
        return channel

    def add(
        self, name: str, sink_url: str, *, channel_id: str | None = None, enabled: bool = True
    ) -> Channel:
        if not name:
            raise ChannelError("name must not be empty")
        check_sink_url(sink_url)
        if channel_id is None:
            channel_id = str(uuid.uuid4())
        elif canonical_id(channel_id) is None:
            raise ChannelError(f"id {channel_id!r} is not a UUID")
        else:
            channel_id = canonical_id(channel_id)
        if channel_id in self._by_id:
            raise ChannelExists(f"a channel with id {channel_id} exists already")
        channel = Channel(channel_id, name, sink_url, enabled)
        self._by_id[channel_id] = channel
        return channel

    def all(self) -> list[Channel]:
        return list(self._by_id.values())

    @classmethod
    def from_file(cls, path: str | Path) -> Registry:
        """``[{"id"?, "name", "sink_url", "enabled"?}, ...]`` (or ``{"channels": [...]}``)."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ChannelError(f"cannot read {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ChannelError(f"{path} is not valid JSON: {exc}") from None
        items = data.get("channels") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ChannelError(f"{path} must hold a list of channels")
        registry = cls()
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ChannelError(f"{path}: channel #{i + 1} is not an object")
            try:
                registry.add(
                    str(item.get("name", "")),
                    str(item.get("sink_url", "")),
                    channel_id=item.get("id"),
                    enabled=bool(item.get("enabled", True)),
                )
            except ChannelError as exc:
                raise ChannelError(f"{path}: channel #{i + 1}: {exc}") from None
        return registry
