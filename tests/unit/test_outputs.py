"""Results are never lost or corrupted: CSV rows whole or absent, JSON whole or absent."""

from __future__ import annotations

import csv
import json
import multiprocessing
from pathlib import Path

import pytest

from engine.measure.result import CSV_COLUMNS, RunResult
from engine.report import files
from tests.unit.test_thresholds_merge import build_result

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


def test_a_json_write_that_fails_half_way_leaves_the_old_file_and_no_debris(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    files.write_document(path, {"version": 1})
    real_write = Path.write_bytes

    def half_then_fail(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        files.write_document(path, {"version": 2, "padding": "x" * 10_000})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
