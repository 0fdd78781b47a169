"""chanload's commands on saved results: merge, compare, chart.

They read JSON that `chanload run`/`suite` wrote; none sends any load.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.errors import fail
from engine.outputs import unwritable, unwritable_dir
from engine.report.files import write_document

PROG = "chanload"

results_app = typer.Typer()


@results_app.command(short_help="Merge runs made at the same time on several machines.")
def merge(
    files: Annotated[list[Path], typer.Argument(help="Run results (chanload run --json).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where the merged result goes.")],
) -> None:
    """Merge results of runs made at the same time (on several machines) into one.

    Exact: histograms are added (percentiles of the union of all samples),
    counters summed, min and max taken; the per-second series is aligned by
    wall-clock second. Start every run at the same time (e.g. with the same
    --duration from one scheduler) for the series to line up.
    """

    from engine.measure.merge import MergeError
    from engine.measure.merge import merge as merge_runs

    if (problem := unwritable(output)) is not None:
        raise fail(PROG, f"--output {output}: {problem}", 2)
    docs = [load_json(f) for f in files]
    try:
        merged = merge_runs(docs)
    except (MergeError, KeyError) as exc:
        raise fail(PROG, f"cannot merge: {exc}", 2) from None
    write_document(output, merged)
    print(
        f"Merged {len(docs)} runs: {merged['total_requests']} requests, {merged['rps']} req/s,"
        f" p50 {merged['p50_us']} us, p99 {merged['p99_us']} us, {merged['error_count']}"
        f" errors -> {output}"
    )


@results_app.command(short_help="Compare two results side by side.")
def compare(
    base: Annotated[Path, typer.Argument(help="The baseline result (run, merge or suite JSON).")],
    new: Annotated[Path, typer.Argument(help="The result to compare with it.")],
) -> None:
    """Throughput, percentiles, errors, memory and server timing of two results,
    with the difference and the ratio: what a proxy change did."""
    from engine.measure.compare import CompareError
    from engine.measure.compare import compare as compare_docs

    try:
        print(compare_docs(load_json(base), load_json(new), (base.name, new.name)), end="")
    except CompareError as exc:
        raise fail(PROG, str(exc), 2) from None


@results_app.command(short_help="Draw the charts of a saved result.")
def chart(
    result: Annotated[Path, typer.Argument(help="A result: run, merge, saturation or suite JSON.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="The directory the PNGs go into (created).")
    ] = Path("charts"),
) -> None:
    """Draw PNG charts from a saved result, as --charts does at the end of a run.

    A run: <scenario>-latency.png (p50/p95/p99/max and req/s, errors/s, VUs per
    second) and <scenario>-memory.png (the target's memory, when sampled). A
    saturation result: saturation.png (throughput and percentiles by step, the
    knee). A suite: suite-overview.png plus each scenario's charts. A merged
    run is charted like a run.
    """
    check_charts_dir(output)
    doc = load_json(result)
    if not isinstance(doc, dict) or not ("suite" in doc or "scenario" in doc):
        raise fail(PROG, f"{result}: not a chanload result (run, merge, saturation or suite)", 2)
    from engine.deliver import write_charts

    write_charts(doc, output, sys.stdout)


def load_json(path: Path) -> dict:
    import orjson

    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise fail(PROG, f"cannot read {path}: {exc.strerror}", 2) from None
    except orjson.JSONDecodeError as exc:
        raise fail(PROG, f"{path} is not JSON: {exc}", 2) from None


def check_charts_dir(path: Path) -> None:
    """Refuse (exit 2) a --charts/--output directory that cannot be written or drawn."""
    from engine.report.charts import ChartsUnavailable, require_matplotlib

    try:
        require_matplotlib()
    except ChartsUnavailable as exc:
        raise fail(PROG, f"--charts: {exc}", 2) from None
    if problem := unwritable_dir(path):
        raise fail(PROG, f"--charts {path}: {problem}", 2)
