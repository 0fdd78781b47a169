"""What chansink answers to one request: mode, query overrides, status and body.

Pure decisions, no I/O: the protocol hands in what it parsed and gets back a
``Reply`` (or None for "never answer").
"""

from __future__ import annotations

import hmac
import random
from dataclasses import dataclass

from common import bodies
from sink.config import MAX_DELAY_MS, Mode, SinkConfig

VALID_TOKEN = b"Bearer test-api-key"
MIXED_SLOW_DELAY_MS = 2000


@dataclass(slots=True)
class Overrides:
    """Per-request query overrides; None where absent or invalid."""

    response_size: int | None = None
    delay_ms: int | None = None
    status: int | None = None
    chunked: bool | None = None


_NO_OVERRIDES = Overrides()


def _parse_int(value: bytes) -> int | None:
    # As the seed (Integer.parse with {n, ""} and n >= 0): plain decimal digits only.
    if value and value.isdigit() and len(value) <= 19:
        return int(value)
    return None


def parse_overrides(url: bytes) -> Overrides:
    """Read ``response_size``, ``delay``, ``status`` and ``chunked`` from the query.

    An invalid value is ignored (the default applies), as in the seed; when a
    parameter repeats, the last valid value wins.
    """
    q = url.find(b"?")
    if q < 0:
        return _NO_OVERRIDES
    end = url.find(b"#", q)
    query = url[q + 1 : end if end >= 0 else len(url)]
    out = Overrides()
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == b"response_size":
            n = _parse_int(value)
            if n is not None:
                out.response_size = n
        elif key == b"delay":
            n = _parse_int(value)
            if n is not None and n <= MAX_DELAY_MS:
                out.delay_ms = n
        elif key == b"status":
            n = _parse_int(value)
            if n is not None and 100 <= n <= 599:
                out.status = n
        elif key == b"chunked":
            if value in (b"1", b"true", b""):
                out.chunked = True
            elif value in (b"0", b"false"):
                out.chunked = False
    return out


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes | None  # exact body bytes, or None for ``size`` filler/JSON bytes
    size: int
    delay_ms: int
    chunked: bool


class Responder:
    """Decides the reply for each request according to the configured mode."""

    __slots__ = ("_config", "_random")

    def __init__(self, config: SinkConfig, rng: random.Random | None = None) -> None:
        self._config = config
        self._random = (rng or random.Random(config.seed)).random

    def reply(self, url: bytes, authorization: list[bytes] | None) -> Reply | None:
        """The reply to one request, or None when the mode never answers.

        ``authorization`` holds the values of every Authorization header seen.
        """
        config = self._config
        mode = config.mode
        if mode is Mode.timeout:
            return None
        ov = parse_overrides(url)
        size = config.body_size if ov.response_size is None else ov.response_size
        delay = ov.delay_ms or 0
        chunked = config.chunked if ov.chunked is None else ov.chunked

        if mode is Mode.fixed:
            status = config.status if ov.status is None else ov.status
            return Reply(status, None, size, delay, chunked)

        if mode is Mode.auth:
            if not authorization:
                return Reply(401, bodies.ERR_MISSING_AUTH, 0, delay, chunked)
            if len(authorization) > 1:
                return Reply(400, bodies.ERR_INVALID_AUTH_HEADER, 0, delay, chunked)
            # Constant time: a benchmark target should not leak the token by timing.
            if hmac.compare_digest(authorization[0], VALID_TOKEN):
                return Reply(200, None, size, delay, chunked)
            return Reply(403, bodies.ERR_INVALID_CREDENTIALS, 0, delay, chunked)

        # Mode.mixed: 80% fast 200, 10% slow 200 (2 s), 10% 503; as the seed rolls.
        roll = self._random()
        if roll > 0.9:
            return Reply(503, bodies.ERR_UNAVAILABLE, 0, delay, chunked)
        if roll > 0.8:
            return Reply(200, None, size, delay + MIXED_SLOW_DELAY_MS, chunked)
        return Reply(200, None, size, delay, chunked)
