"""chanproxy's configuration: one frozen object, validated once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common import tcp, tls

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4000
DEFAULT_UPSTREAM_TIMEOUT = 30.0
# Slow clients, as chansink: a request head still arriving after this gets 408
# and a close, as does a request body with no byte for DEFAULT_BODY_TIMEOUT
# (nginx's client_body_timeout); a keep-alive connection with nothing going on
# is closed.
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_IDLE_TIMEOUT = 75.0
MAX_HEADER_BYTES = 64 * 1024


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    channels_file: str | None = None
    buffer: bool = False
    upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    connect_timeout: float = 5.0
    max_idle_per_sink: int = 256
    grace: float = 5.0
    stats_interval: float = 1.0
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    congestion: str = tcp.AUTO
    # The admin endpoint's token (proxy/admin.py): made at start unless given.
    admin_token: str = ""
    admin_token_given: bool = False
    tls_cert: str | None = None  # serve https with this certificate (chain) and key
    tls_key: str | None = None
    upstream_ca_file: str | None = None  # https sinks: trust this CA, not the system's

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    def __post_init__(self) -> None:
        problems = []
        token = self.admin_token
        if token and (len(token) < 16 or not all(33 <= ord(c) < 127 for c in token)):
            problems.append("--admin-token must be 16 or more visible ASCII characters, no spaces")
        if not 0 <= self.port <= 65535:
            problems.append(f"--port must be 0-65535, got {self.port}")
        if not self.upstream_timeout > 0:
            problems.append(f"--upstream-timeout must be > 0, got {self.upstream_timeout}")
        if not self.connect_timeout > 0:
            problems.append(f"--connect-timeout must be > 0, got {self.connect_timeout}")
        if not self.header_timeout > 0:
            problems.append(f"--header-timeout must be > 0, got {self.header_timeout}")
        if not self.body_timeout > 0:
            problems.append(f"--body-timeout must be > 0, got {self.body_timeout}")
        if not self.idle_timeout > 0:
            problems.append(f"--idle-timeout must be > 0, got {self.idle_timeout}")
        problem = tcp.check(self.congestion)
        if problem:
            problems.append(problem)
        problems += tls.problems(self.tls_cert, self.tls_key)
        if self.upstream_ca_file is not None and not Path(self.upstream_ca_file).is_file():
            problems.append(f"--upstream-ca-file {self.upstream_ca_file}: no such file")
        if problems:
            raise ConfigError("; ".join(problems))
