"""Figures from the fault and fuzz tests, for docs/reliability.md.

When ``CHANLOAD_TALLY`` names a file, each fuzz test appends one JSON line
(what it ran and what it found) to it; ``make reliability`` collects them
into bench_results/reliability.md. Without it, nothing is written.
"""

from __future__ import annotations

import json
import os


def record(name: str, figures: dict) -> None:
    path = os.environ.get("CHANLOAD_TALLY")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"test": name, **figures}) + "\n")
