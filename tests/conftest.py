from __future__ import annotations

import pytest

from tests.support import SinkProcess, start_sink


@pytest.fixture
def sink_factory(tmp_path):
    """Start chansink child processes; every one is stopped at teardown."""
    started: list[SinkProcess] = []

    def factory(*args: str, **kw) -> SinkProcess:
        sink = start_sink(tmp_path, *args, **kw)
        started.append(sink)
        return sink

    yield factory
    for sink in started:
        if sink.proc.poll() is None:
            sink.proc.kill()
            sink.proc.wait()


@pytest.fixture
def sink(sink_factory) -> SinkProcess:
    """A default chansink (fixed mode, 200, 256-byte bodies)."""
    return sink_factory()
