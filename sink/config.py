"""chansink's configuration: one frozen object, validated once."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from common import tcp, tls

# The seed's defaults (mock_sink.exs).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4001
DEFAULT_STATUS = 200
DEFAULT_BODY_SIZE = 256

# Requests whose header section exceeds this get 431 (RFC 6585).
MAX_HEADER_BYTES = 64 * 1024
# The largest ?delay= honoured; longer values are ignored like any invalid one.
MAX_DELAY_MS = 24 * 3600 * 1000
# Graceful shutdown: in-flight responses get this long to finish.
DEFAULT_GRACE_S = 5.0
# Slow clients: a request still arriving after this many seconds gets 408 and
# the connection is closed (slowloris); a keep-alive connection with nothing
# going on for this long is closed (nginx's keepalive_timeout is 75 s too).
# Checked once a second, so they act within a second of the limit.
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_IDLE_TIMEOUT_S = 75.0
# A request body with no byte for this long (a client that stalls mid-upload,
# or trickles it) gets 408 and a close; time the server itself stops reading
# does not count. nginx's client_body_timeout is 60 s too. Its clock restarts
# at the first sweep after a byte, so it acts within two seconds of the limit.
DEFAULT_BODY_TIMEOUT_S = 60.0


class Mode(enum.StrEnum):
    fixed = "fixed"
    timeout = "timeout"
    auth = "auth"
    mixed = "mixed"


class ConfigError(ValueError):
    """A setting that cannot work; the message names the option."""


@dataclass(frozen=True, slots=True)
class SinkConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    mode: Mode = Mode.fixed
    status: int = DEFAULT_STATUS
    body_size: int = DEFAULT_BODY_SIZE
    chunked: bool = False
    sendfile: bool = True
    access_log: bool = False
    stats_interval: float = 1.0
    grace: float = DEFAULT_GRACE_S
    seed: int | None = None
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S
    congestion: str = tcp.AUTO
    memo: bool = True  # answer a request read again byte for byte without parsing it
    tls_cert: str | None = None  # serve https with this certificate (chain) ...
    tls_key: str | None = None  # ... and key (common/tls.py)

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def problems(self) -> list[str]:
        """Every invalid setting at once, each naming its option."""
        out = []
        if not 0 <= self.port <= 65535:
            out.append(f"--port must be 0-65535 (0 picks a free port), got {self.port}")
        if not 100 <= self.status <= 599:
            out.append(f"--status must be 100-599, got {self.status}")
        if self.body_size < 0:
            out.append(f"--body-size must be >= 0, got {self.body_size}")
        if self.stats_interval <= 0:
            out.append(f"--stats-interval must be > 0, got {self.stats_interval}")
        if self.grace < 0:
            out.append(f"--grace must be >= 0, got {self.grace}")
        if not self.header_timeout > 0:
            out.append(f"--header-timeout must be > 0, got {self.header_timeout}")
        if not self.body_timeout > 0:
            out.append(f"--body-timeout must be > 0, got {self.body_timeout}")
        if not self.idle_timeout > 0:
            out.append(f"--idle-timeout must be > 0, got {self.idle_timeout}")
        if not self.host:
            out.append("--host must not be empty")
        problem = tcp.check(self.congestion)
        if problem:
            out.append(problem)
        out += tls.problems(self.tls_cert, self.tls_key)
        return out

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"
