"""--hdr-log: the run's per-second histograms in HdrHistogram's interval log format.

Readable by HdrHistogram's own tools (HistogramLogProcessor, the plotter,
hdrh.log.HistogramLogReader). Values are microseconds; the max column is
written in milliseconds (the format's usual unit ratio).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogWriter

from engine.outputs import open_replacement


def write_hdr_log(path: str | Path, result: dict[str, Any]) -> int:
    """Write one interval line per second with latencies; the number of lines."""
    start = result["started_epoch"]
    lines = 0
    with open_replacement(path, "w") as f:
        writer = HistogramLogWriter(f)
        writer.output_comment(f"{result.get('command', 'chanload run')}")
        writer.output_log_format_version()
        # hdrh's own output_start_time fails on real epochs: write the lines here.
        stamp = datetime.fromtimestamp(start, UTC).isoformat(" ")
        f.write(f"#[StartTime: {start:.3f} (seconds since epoch), {stamp}]\n")
        f.write(f"#[BaseTime: {start:.3f} (seconds since epoch)]\n")
        writer.output_legend()
        for snap in result["series"]:
            if not snap.get("histogram"):
                continue
            h = HdrHistogram.decode(snap["histogram"])
            end = snap["t"]
            begin = max(0.0, end - snap.get("elapsed", 1.0))
            writer.output_interval_histogram(h, begin, end, max_value_unit_ratio=1000.0)
            lines += 1
    return lines
