"""CSV rows (the seed's columns first) and the JSON document of a run."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import orjson

from engine.measure.result import CSV_COLUMNS, RunResult
from engine.outputs import open_replacement


def csv_line(values: list) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def append_csv(path: str | Path, result: RunResult) -> bool:
    """Append one row; write the header first when the file is new or empty.

    The row (with the header, if any) goes out in one write() on a file
    opened with O_APPEND, so concurrent writers never interleave within a
    row. Returns True when the header was written.
    """
    path = Path(path)
    row = result.csv_row()
    data = csv_line([row[c] for c in CSV_COLUMNS])
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        new = os.fstat(fd).st_size == 0
        if new:
            data = csv_line(list(CSV_COLUMNS)) + data
        os.write(fd, data.encode())
    finally:
        os.close(fd)
    return new


def write_json(path: str | Path, result) -> None:
    """Write the whole result (a RunResult or SaturationResult); never half a file."""
    write_document(path, result.to_dict())


def write_document(path: str | Path, doc: dict) -> None:
    """JSON via a temporary file and a rename: the file is whole or absent."""
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    with open_replacement(path) as out:
        out.write(data)
