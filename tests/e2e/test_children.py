"""Child processes and the Erlang cookie (issue 15, items 3 and 5): nothing
from the working directory runs in chanload's place, and the cookie reaches
no child.

chanload is started as a user starts it (the `chanload` script), from a
directory holding modules named like chanload's own (`engine/workers.py`,
`cli/chanload.py`, ...): with `python -m` and no `-P`, its re-exec (which
moves `--cookie` out of the command line) and its `--workers` would import
them, and they would run with the cookie in their environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common.children import python_module
from engine import procfs
from tests.support import start_sink, wait_until

CHANLOAD = Path(sys.executable).with_name("chanload")
PLANTED = "import pathlib\npathlib.Path({marker!r}).write_text(__name__)\nraise SystemExit(97)\n"
SECRET = "s3cr3t-cookie-in-the-env"


def plant(where: Path, marker: Path) -> None:
    """Modules that leave a mark and exit, wherever chanload imports its own."""
    for package, modules in {
        "engine": ["workers", "drive"],
        "cli": ["chanload", "chansink", "chanproxy"],
        "common": ["children", "eventloop"],
    }.items():
        (where / package).mkdir(parents=True)
        for module in ["__init__", *modules]:
            (where / package / f"{module}.py").write_text(PLANTED.format(marker=str(marker)))
    (where / "uvloop.py").write_text(PLANTED.format(marker=str(marker)))


def test_children_are_started_with_minus_p():
    cmd = python_module("engine.workers")
    assert cmd[:4] == [sys.executable, "-P", "-m", "engine.workers"]


def test_nothing_planted_in_the_working_directory_runs(tmp_path):
    sink = start_sink(tmp_path)
    cwd, marker = tmp_path / "cwd", tmp_path / "planted-module-ran"
    plant(cwd, marker)
    out = tmp_path / "r.json"
    try:
        run = subprocess.run(
            [
                str(CHANLOAD), "run", "--scenario", "direct_sink", "--sink", sink.url,
                "--duration", "1", "--concurrency", "2", "--workers", "2",
                "--cookie", "x", "--quiet", "--json", str(out),
            ],
            cwd=cwd, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        sink.stop()
    assert not marker.exists(), f"{marker.read_text()} ran from the working directory"
    assert run.returncode == 0, run.stderr
    assert '"total_requests"' in out.read_text()
    assert sink.summary["requests"] > 0


def _workers_of(pid: int) -> list[int]:
    found = []
    for child in procfs.children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"engine.workers" in cmdline:
            found.append(child)
    return found


def test_the_cookie_reaches_no_child(tmp_path):
    """Given in the environment or on the command line, the cookie is in no
    worker's environment (read from /proc/PID/environ while the run goes)."""
    sink = start_sink(tmp_path)
    try:
        for how in ("env", "argv"):
            env = {k: v for k, v in os.environ.items() if k != "CHANLOAD_COOKIE"}
            args = [
                str(CHANLOAD), "run", "--scenario", "direct_sink", "--sink", sink.url,
                "--duration", "4", "--concurrency", "2", "--workers", "2", "--quiet",
            ]  # fmt: skip
            if how == "env":
                env["CHANLOAD_COOKIE"] = SECRET
            else:
                args += ["--cookie", SECRET]
            proc = subprocess.Popen(
                args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
            )
            try:
                workers = wait_until(lambda p=proc: _workers_of(p.pid), 30, "the workers")
                for worker in workers:
                    environ = Path(f"/proc/{worker}/environ").read_bytes()
                    assert b"CHANLOAD_COOKIE" not in environ, how
                    assert SECRET.encode() not in environ, how
            finally:
                _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    finally:
        sink.stop()


def test_the_cookie_given_twice_is_refused_before_any_traffic(tmp_path):
    sink = start_sink(tmp_path)
    try:
        run = subprocess.run(
            [
                str(CHANLOAD), "run", "--scenario", "direct_sink", "--sink", sink.url,
                "--duration", "1", "--cookie", "a", "--cookie=b",
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        sink.stop()
    assert run.returncode == 2
    assert "--cookie given 2 times" in run.stderr
    assert sink.summary["requests"] == 0
