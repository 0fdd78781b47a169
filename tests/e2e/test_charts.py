"""--charts, chanload chart and the charts' content: PNGs that hold the lines they promise."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np  # comes with matplotlib, which `make install` installs
from matplotlib import image

from engine.report import charts as charts_mod
from tests.support import ROOT, chanload_command, run_chanload

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def pixels_of(path, hex_colour: str, tolerance: int = 30) -> int:
    """How many pixels of the chart are (about) this colour: a drawn line has hundreds."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    img = (image.imread(path)[:, :, :3] * 255).astype(int)
    return int((np.abs(img - rgb).max(axis=2) <= tolerance).sum())


def assert_chart(path) -> None:
    assert path.is_file(), f"missing {path.name}"
    width, height = png_size(path)
    assert (width, height) == (
        charts_mod.SIZE[0] * charts_mod.DPI,
        charts_mod.SIZE[1] * charts_mod.DPI,
    )
    assert path.stat().st_size > 10_000  # axes, text and lines, not a blank canvas


def test_run_charts_latency_throughput_and_memory(sink, tmp_path):
    charts = tmp_path / "charts" / "deeper"  # created, parents too
    run = run_chanload(
        tmp_path,
        "--scenario",
        "ramp_up",
        "--channel-url",
        sink.url + "/c",
        "--sink",
        sink.url,
        "--duration",
        "3",
        "--concurrency",
        "4",
        "--target-pid",
        str(sink.proc.pid),
        "--charts",
        str(charts),
    )
    assert run.code == 0, run.stderr
    assert f"Wrote 2 charts to {charts}/: ramp_up-latency.png, ramp_up-memory.png" in run.stdout
    latency, memory = charts / "ramp_up-latency.png", charts / "ramp_up-memory.png"
    assert_chart(latency)
    assert_chart(memory)
    # each percentile's line and the req/s stairs are drawn in their colours
    for colour in (*(charts_mod.COLOURS[k] for k in ("p50", "p95", "p99")), "#2ca02c"):
        assert pixels_of(latency, colour) > 100, colour
    assert pixels_of(latency, "#9467bd") > 100  # ramp_up: the VUs vary, so they are drawn
    assert pixels_of(memory, "#1f77b4") > 100  # the total memory line
    assert run.result["error_count"] == 0


def test_chart_command_draws_from_saved_results_run_and_saturation(sink, tmp_path):
    sat = run_chanload(
        tmp_path,
        "--scenario",
        "saturation",
        "--channel-url",
        sink.url + "/c",
        "--sink",
        sink.url,
        "--duration",
        "0.5",
        "--concurrency",
        "5",
        "--slo-p99",
        "1000",
    )
    assert sat.code == 0, sat.stderr
    saved = tmp_path / "sat.json"
    saved.write_text(json.dumps(sat.result))
    out_dir = tmp_path / "out"
    proc = subprocess.run(
        chanload_command("chart", str(saved), "-o", str(out_dir)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Wrote 1 chart to" in proc.stdout
    chart = out_dir / "saturation.png"
    assert_chart(chart)
    assert pixels_of(chart, "#2ca02c") > 100  # achieved req/s by step
    assert pixels_of(chart, "#9467bd") > 100  # every step met a 1 s p99: the knee is drawn
    assert sat.result["knee"]["step"] == len(sat.result["results"])


def test_no_memory_chart_without_memory_samples(tmp_path):
    doc = {
        "scenario": "happy_path",
        "concurrency": 2,
        "duration_s": 2,
        "series": [
            {"t": 1.0, "elapsed": 1.0, "requests": 10, "errors": 2, "rps": 10.0, "vus": 2,
             "p50_us": 900, "p95_us": 1500, "p99_us": 2000, "max_us": 2500},
            {"t": 2.0, "elapsed": 1.0, "requests": 12, "errors": 0, "rps": 12.0, "vus": 2,
             "p50_us": 800, "p95_us": 1400, "p99_us": 2100, "max_us": 2200},
        ],
        "memory": None,
    }  # fmt: skip
    made = charts_mod.charts(doc, tmp_path)
    assert [p.name for p in made] == ["happy_path-latency.png"]
    # errors in the first second: the errors/s stairs are drawn
    no_errors = dict(doc, series=[dict(s, errors=0) for s in doc["series"]])
    other = tmp_path / "other"
    charts_mod.charts(no_errors, other)
    assert pixels_of(tmp_path / "happy_path-latency.png", charts_mod.ERRORS) > 100
    assert pixels_of(other / "happy_path-latency.png", charts_mod.ERRORS) == 0


def test_beam_memory_chart_draws_binary_and_processes_and_the_lost_moment(tmp_path):
    mb = 1024 * 1024
    series = [
        {"t": float(t), "total": (60 + t) * mb, "binary": (5 + t) * mb, "processes": 20 * mb}
        for t in range(6)
    ]
    doc = {
        "scenario": "large_payload",
        "concurrency": 10,
        "duration_s": 10,
        "series": [],
        "memory": {
            "source": "Lightning BEAM",
            "samples": [[s["t"], s["total"]] for s in series],
            "series": series,
            "start_bytes": 60 * mb,
            "end_bytes": 65 * mb,
            "max_bytes": 65 * mb,
            "delta_bytes": 5 * mb,
            "lost_at": 5.5,
        },
        "memory_verdict": "streaming: delta +5.0 MB",
    }
    made = charts_mod.charts(doc, tmp_path)
    assert [p.name for p in made] == ["large_payload-memory.png"]  # no series: no latency chart
    chart = made[0]
    assert_chart(chart)
    assert pixels_of(chart, "#ff7f0e") > 100  # binary
    assert pixels_of(chart, "#2ca02c") > 100  # processes
    assert pixels_of(chart, "#d62728") > 100  # sampling lost at 5.5 s


def test_charts_option_errors_before_any_load(tmp_path):
    a_file = tmp_path / "file.png"
    a_file.write_text("x")
    # no load is sent: the target does not even exist
    run = run_chanload(
        tmp_path, "--scenario", "direct_sink", "--sink", "http://127.0.0.1:9",
        "--charts", str(a_file), json_out=False,
    )  # fmt: skip
    assert run.code == 2
    assert run.stderr.strip() == f"chanload: error: --charts {a_file}: not a directory"


def test_charts_without_matplotlib_is_a_usage_error_that_says_what_to_install(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from cli.chanload import main\n"
        f"main(['run', '--scenario', 'direct_sink', '--charts', {str(tmp_path)!r}])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 2
    assert "pip install 'chanload[charts]'" in proc.stderr


def test_chart_command_refuses_what_is_not_a_result(tmp_path):
    doc = tmp_path / "x.json"
    doc.write_text('{"hello": 1}')
    proc = subprocess.run(
        chanload_command("chart", str(doc), "-o", str(tmp_path / "o")),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "not a chanload result" in proc.stderr
