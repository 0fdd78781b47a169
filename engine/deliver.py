"""What `chanload run` does with a result: thresholds, the summary, CSV, JSON,
the HdrHistogram log and the charts, in that order; and the exit code.

Every path was checked with the configuration, before the load.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from engine.config import RunConfig
from engine.measure import thresholds
from engine.measure.result import RunResult
from engine.measure.saturation import SaturationResult
from engine.report.console import summary
from engine.report.files import append_csv, write_json
from engine.report.hdrlog import write_hdr_log

EXIT_OK = 0
EXIT_THRESHOLD = 3
EXIT_INTERRUPTED = 130


def deliver(result: RunResult | SaturationResult, config: RunConfig, out: TextIO) -> int:
    """Report ``result`` and write its files; the exit code (0, 3 or 130)."""
    if isinstance(result, SaturationResult):
        _saturation(result, config, out)
        _charts(result.to_dict(), config, out)
        return EXIT_INTERRUPTED if result.interrupted else EXIT_OK
    outcomes = thresholds.apply(config.limits, result)
    out.write(summary(result) + "\n")
    if outcomes:
        out.write(thresholds.report(outcomes) + "\n")
    if config.csv:
        _write(out, f"Writing CSV to {config.csv}... ", lambda: append_csv(config.csv, result))
    if config.json:
        _write(out, f"Writing JSON to {config.json}... ", lambda: write_json(config.json, result))
    if config.hdr_log is not None:
        n = write_hdr_log(Path(config.hdr_log), result.to_dict())
        out.write(f"Wrote {n} interval histograms to {config.hdr_log}\n")
    _charts(result.to_dict(), config, out)
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_THRESHOLD if thresholds.failures(outcomes) else EXIT_OK


def _write(out: TextIO, what: str, action) -> None:
    out.write(what)
    out.flush()
    action()
    out.write("ok\n")


def _saturation(result: SaturationResult, config: RunConfig, out: TextIO) -> None:
    out.write(result.table() + "\n")
    if config.thresholds:
        out.write(" Thresholds: not applied to saturation steps (each step is a different load)\n")
    if config.hdr_log is not None:
        out.write(" --hdr-log: not written for saturation (use --json: every step's histogram)\n")
    if config.csv:

        def rows() -> None:
            for step in result.steps:
                append_csv(config.csv, step)

        _write(out, f"Writing CSV to {config.csv} (one row per step)... ", rows)
    if config.json:
        _write(out, f"Writing JSON to {config.json}... ", lambda: write_json(config.json, result))


def _charts(doc: dict, config: RunConfig, out: TextIO) -> None:
    if config.charts is not None:
        write_charts(doc, Path(config.charts), out)


def write_charts(doc: dict, directory: Path, out: TextIO) -> None:
    """Draw ``doc``'s charts into ``directory`` and say which."""
    from engine.report.charts import charts as draw  # matplotlib loads only when asked

    made = draw(doc, directory)
    out.write(
        f"Wrote {len(made)} chart{'s' if len(made) != 1 else ''} to {directory}/: "
        + (", ".join(p.name for p in made) or "no data to chart")
        + "\n"
    )
