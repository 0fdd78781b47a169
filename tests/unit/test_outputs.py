"""Results are never lost or corrupted: CSV rows whole or absent; JSON, HdrHistogram
logs and charts whole or absent, written through a temporary file that is never
predictable, never left behind and never less readable than open() makes it."""

from __future__ import annotations

import csv
import errno
import json
import multiprocessing
import os
import resource
import signal
import stat
from pathlib import Path

import pytest

from engine.measure.result import CSV_COLUMNS, RunResult
from engine.report import charts, files
from engine.report.hdrlog import write_hdr_log
from tests.unit.test_thresholds_merge import build_result, result_from

WRITERS, ROWS = 8, 150


def _append_rows(path: str, index: int, result: RunResult) -> None:
    result.scenario = f"writer-{index}"
    for _ in range(ROWS):
        files.append_csv(path, result)


def test_concurrent_writers_never_interleave_within_a_row(tmp_path):
    path = tmp_path / "results.csv"
    result = build_result([[100, 200, 300]], 1_700_000_000.0)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_rows, args=(str(path), i, result)) for i in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    assert header == list(CSV_COLUMNS)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == WRITERS * ROWS  # one header, every row there
    assert all(None not in row and len(row) == len(CSV_COLUMNS) for row in rows)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["scenario"]] = counts.get(row["scenario"], 0) + 1
    assert counts == {f"writer-{i}": ROWS for i in range(WRITERS)}


# 30 seconds of latencies: a 4 KiB HdrHistogram log, a 50 KiB PNG.
RESULT = result_from([[1000 + 37 * i * j for j in range(50)] for i in range(30)], 1_700_000_000.0)
# Each writer, and what it writes (every one more than FILE_LIMIT bytes).
FILE_WRITERS = {
    "json": lambda path: files.write_document(path, {"version": 2, "padding": "x" * 10_000}),
    "hdr-log": lambda path: write_hdr_log(path, RESULT),
    "chart": lambda path: charts.latency_chart(RESULT, path),
}
FILE_LIMIT = 2048
OLD = b"the previous result, which must survive\n"


def _write_past_the_file_size_limit(name: str, path: str) -> None:
    # A child process (fork): RLIMIT_FSIZE fails the write that would pass
    # FILE_LIMIT bytes with EFBIG, as a full disk fails it with ENOSPC.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))
    try:
        FILE_WRITERS[name](Path(path))
    except OSError as exc:
        os._exit(0 if exc.errno == errno.EFBIG else 3)
    os._exit(4)  # the write went through: the test proves nothing


@pytest.mark.parametrize("writer", sorted(FILE_WRITERS))
def test_a_write_that_fails_half_way_leaves_the_old_file_and_no_debris(tmp_path, writer):
    path = tmp_path / "result"
    path.write_bytes(OLD)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_write_past_the_file_size_limit, args=(writer, str(path)))
    child.start()
    child.join(60)
    assert child.exitcode == 0, f"the write did not fail with EFBIG half way ({child.exitcode})"
    assert path.read_bytes() == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["result"]


def test_an_interrupt_while_writing_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "run.hlog"
    path.write_bytes(OLD)

    def interrupted_series():
        yield from RESULT["series"][:10]  # ten lines written, then Ctrl-C
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_hdr_log(path, {**RESULT, "series": interrupted_series()})
    assert path.read_bytes() == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["run.hlog"]


@pytest.mark.parametrize("failure", [OSError(errno.EXDEV, "cross-device"), KeyboardInterrupt()])
def test_a_failing_rename_leaves_the_old_file_and_no_debris(tmp_path, monkeypatch, failure):
    path = tmp_path / "result.json"
    files.write_document(path, {"version": 1})

    def fail(src, dst):
        assert Path(src).is_file()  # whole, about to take the place of dst
        raise failure

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(type(failure)):
        files.write_document(path, {"version": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


@pytest.mark.parametrize("writer", sorted(FILE_WRITERS))
def test_a_link_planted_at_the_old_temporary_name_is_not_followed(tmp_path, writer):
    # The name the writers used to write through, without O_EXCL: .NAME.PID.tmp
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(OLD)
    path = out / "result"
    planted = out / f".result.{os.getpid()}.tmp"
    planted.symlink_to(victim)
    FILE_WRITERS[writer](path)
    assert victim.read_bytes() == OLD
    assert not path.is_symlink() and path.stat().st_size > FILE_LIMIT
    assert planted.is_symlink()  # not ours: left as it was
    assert sorted(p.name for p in out.iterdir()) == [planted.name, "result"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=lambda m: f"umask-{m:03o}")
@pytest.mark.parametrize("writer", sorted(FILE_WRITERS))
def test_a_new_result_file_has_the_mode_the_umask_gives(tmp_path, writer, umask):
    path = tmp_path / "result"
    old = os.umask(umask)
    try:
        FILE_WRITERS[writer](path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
