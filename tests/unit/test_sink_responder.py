from __future__ import annotations

import random

import pytest

from common import bodies
from sink.config import ConfigError, Mode, SinkConfig
from sink.responder import Overrides, Responder, parse_overrides


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (b"/test", Overrides()),
        (b"/test?", Overrides()),
        (b"/t?response_size=10", Overrides(response_size=10)),
        (b"/t?delay=250&status=503", Overrides(delay_ms=250, status=503)),
        (b"/t?status=100", Overrides(status=100)),
        (b"/t?status=599", Overrides(status=599)),
        (b"/t?status=600", Overrides()),
        (b"/t?status=99", Overrides()),
        (b"/t?response_size=-1", Overrides()),
        (b"/t?response_size=1e3", Overrides()),
        (b"/t?response_size=+5", Overrides()),
        (b"/t?delay=86400001", Overrides()),
        (b"/t?chunked=1", Overrides(chunked=True)),
        (b"/t?chunked=0", Overrides(chunked=False)),
        (b"/t?chunked", Overrides(chunked=True)),
        (b"/t?x=1&response_size=5#frag", Overrides(response_size=5)),
        (b"/t?response_size=5&response_size=oops", Overrides(response_size=5)),
        (b"/t?response_size=99999999999999999999999", Overrides()),
    ],
)
def test_parse_overrides(url, expected):
    assert parse_overrides(url) == expected


def test_fixed_mode_uses_overrides():
    r = Responder(SinkConfig(status=201, body_size=7))
    reply = r.reply(b"/t", None)
    assert (reply.status, reply.size, reply.delay_ms, reply.body) == (201, 7, 0, None)
    reply = r.reply(b"/t?status=418&response_size=3&delay=9", None)
    assert (reply.status, reply.size, reply.delay_ms) == (418, 3, 9)


def test_timeout_mode_never_answers():
    assert Responder(SinkConfig(mode=Mode.timeout)).reply(b"/t", None) is None


@pytest.mark.parametrize(
    ("auth", "status", "body"),
    [
        (None, 401, bodies.ERR_MISSING_AUTH),
        ([b"Bearer nope"], 403, bodies.ERR_INVALID_CREDENTIALS),
        ([b"Bearer test-api-key "], 403, bodies.ERR_INVALID_CREDENTIALS),
        ([b"Bearer test-api-key"], 200, None),
        ([b"Bearer test-api-key", b"Bearer test-api-key"], 400, bodies.ERR_INVALID_AUTH_HEADER),
    ],
)
def test_auth_mode(auth, status, body):
    reply = Responder(SinkConfig(mode=Mode.auth)).reply(b"/t?status=500", auth)
    assert reply.status == status  # ?status does not override auth's decision
    assert reply.body == body


def test_mixed_mode_proportions():
    r = Responder(SinkConfig(mode=Mode.mixed), random.Random(1))
    replies = [r.reply(b"/t", None) for _ in range(20000)]
    fast = sum(1 for x in replies if x.status == 200 and x.delay_ms == 0)
    slow = sum(1 for x in replies if x.status == 200 and x.delay_ms == 2000)
    down = sum(1 for x in replies if x.status == 503)
    assert fast + slow + down == 20000
    assert abs(fast / 20000 - 0.8) < 0.02
    assert abs(slow / 20000 - 0.1) < 0.02
    assert abs(down / 20000 - 0.1) < 0.02


def test_mixed_mode_delay_adds_to_the_slow_answers():
    r = Responder(SinkConfig(mode=Mode.mixed), random.Random(3))
    delays = {x.delay_ms for x in (r.reply(b"/t?delay=100", None) for _ in range(500))}
    assert delays <= {100, 2100}
    assert 2100 in delays


def test_config_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as err:
        SinkConfig(port=-1, status=42, body_size=-3)
    message = str(err.value)
    assert "--port" in message and "--status" in message and "--body-size" in message
