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


@pytest.fixture
def proxy_factory(tmp_path):
    """Start chanproxy child processes; every one is stopped at teardown."""
    started: list[SinkProcess] = []

    def factory(*args: str, **kw) -> SinkProcess:
        proxy = start_sink(tmp_path, *args, program="chanproxy", **kw)
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.proc.wait()


@pytest.fixture
def echo(tmp_path):
    """The echo sink (tests/servers/echo.py): answers with what it received."""
    import subprocess
    import sys

    from tests.support import ROOT, wait_until

    log = tmp_path / "echo.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.echo"],
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    import re

    m = wait_until(lambda: re.search(r"listening on (http://\S+)", log.read_text()), 10, "echo")
    yield m.group(1)
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def tls():
    """A throwaway CA and its certificates (tests.support.TlsFiles), for HTTPS tests."""
    import shutil
    import tempfile
    from pathlib import Path

    from tests.support import TlsFiles

    # Not under pytest's 0700 temporary tree: nginx's worker (not root) reads these.
    root = Path(tempfile.mkdtemp(prefix="chanload-tls-"))
    root.chmod(0o755)
    yield TlsFiles(root)
    shutil.rmtree(root, ignore_errors=True)
