"""`make bench` (for now): a short self-benchmark of chansink, driven by chanload.

Starts chansink on a free loopback port, runs chanload's direct_sink (20 VUs,
10 s), large_response and large_payload (1 MiB, 5 s each) against it, and
writes the CSV and JSON of each run under bench_results/ (kept out of git).
Nothing but this project is needed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.perf.common import RESULTS, start_chansink

RUNS = [
    ("direct_sink", "10", []),
    ("large_response", "5", ["--response-size", "1048576"]),
    ("large_payload", "5", ["--payload-size", "1048576"]),
]


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y.%m.%d-%H.%M")
    csv_path = RESULTS / f"bench-{stamp}.csv"
    tmp = Path(tempfile.mkdtemp(prefix="chanload-bench-"))
    sink = start_chansink([], [], tmp / "chansink.log")
    chanload = Path(sys.executable).with_name("chanload")
    try:
        for scenario, duration, extra in RUNS:
            target = ["--sink", f"http://127.0.0.1:{sink.port}"]
            if scenario != "direct_sink":
                target = ["--channel-url", f"http://127.0.0.1:{sink.port}/test"]
            cmd = [
                str(chanload),
                "run",
                "--scenario",
                scenario,
                *target,
                "--concurrency",
                "20",
                "--duration",
                duration,
                *extra,
                "--csv",
                str(csv_path),
                "--json",
                str(RESULTS / f"bench-{stamp}-{scenario}.json"),
            ]
            code = subprocess.call(cmd)
            if code != 0:
                print(f"bench: {scenario} failed (exit {code})", file=sys.stderr)
                return code
    finally:
        sink.stop()
    print(f"\nResults: {csv_path} (one row per run) and bench-{stamp}-*.json in {RESULTS}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
