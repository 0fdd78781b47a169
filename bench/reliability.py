"""make reliability: run the fault, interrupt, limit, output and fuzz tests at full
size, and write what they tried and found.

    python -m bench.reliability [--client-cases 5000] [--server-cases 10000] [--etf-cases 10000]

Writes bench_results/reliability.md (the figures, the exact command, the
versions) and refreshes the figures section of docs/reliability.md between
its markers. Exits 1 when any test failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "bench_results" / "reliability.md"
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"

# Test files, and what their failures would mean.
GROUPS = {
    "tests/e2e/test_faults.py": "target faults (scripted raw TCP, SIGSTOP, SIGKILL, restart)",
    "tests/e2e/test_interrupt.py": "Ctrl-C / SIGTERM during a run",
    "tests/e2e/test_limits.py": "open-file limits, 5,000 connections",
    "tests/unit/test_outputs.py": "CSV, JSON, hdr log and charts written whole or not at all",
    "tests/e2e/test_sink_timeouts.py": "slow clients: header and idle timeouts, idle connections",
    "tests/e2e/test_body_timeouts.py": "request bodies that stall or trickle: --body-timeout",
    "tests/e2e/test_pipelining.py": "clients that pipeline and never read: memory bounded",
    "tests/e2e/test_admin.py": "chanproxy's admin endpoint, driven from a web page or badly",
    "tests/e2e/test_children.py": "code planted in the working directory",
    "tests/unit/test_handshake.py": "the distribution handshake's secrets",
    "tests/unit/test_dist_frames.py": "a node's hostile or broken frames",
    "tests/fuzz": "fuzzing (client responses; sink and proxy requests; node terms)",
}
# Tests whose failure would mean a result lost or corrupted.
RESULT_TESTS = ("tests/e2e/test_interrupt.py", "tests/unit/test_outputs.py")


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version(), "kernel": platform.release()}
    for dist in ("chanload", "hypothesis", "httptools", "h11", "uvloop"):
        out[dist] = version(dist)
    return out


def run_tests(args, junit: Path, tally: Path) -> tuple[int, float]:
    env = dict(
        os.environ,
        CHANLOAD_TALLY=str(tally),
        CHANLOAD_FUZZ_CASES=str(args.client_cases),
        CHANLOAD_SERVER_FUZZ_CASES=str(args.server_cases),
        CHANLOAD_ETF_FUZZ_CASES=str(args.etf_cases),
    )
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-o",
        "junit_family=xunit1",
        f"--junitxml={junit}",
        *GROUPS,
    ]
    started = time.monotonic()
    code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    return code, time.monotonic() - started


def outcomes(junit: Path) -> list[dict]:
    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        path = (case.get("file") or case.get("classname", "").replace(".", "/") + ".py").lstrip("/")
        state = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                state = "failed"
            elif child.tag == "skipped":
                state = "skipped"
        out.append({"file": path, "name": case.get("name"), "state": state})
    return out


def group_of(path: str) -> str:
    for group in GROUPS:
        if path == group or path.startswith(group.rstrip("/") + "/"):
            return group
    return path


def render(args, cases: list[dict], tally: list[dict], code: int, took: float) -> tuple[str, str]:
    rows = []
    for group, what in GROUPS.items():
        mine = [c for c in cases if group_of(c["file"]) == group]
        count = {
            s: sum(1 for c in mine if c["state"] == s) for s in ("passed", "failed", "skipped")
        }
        rows.append(
            f"| {what} | `{group}` | {len(mine)} | {count['passed']} | {count['failed']}"
            f" | {count['skipped']} |"
        )
    fuzz = [
        f"| {t['test']} | {t['cases']:,} | {t.get('crashes', 0)} | {t.get('hangs', 0)}"
        f" | {t.get('detail', '')} |"
        for t in tally
    ]
    total = sum(t["cases"] for t in tally)
    crashes = sum(t.get("crashes", 0) for t in tally)
    hangs = sum(t.get("hangs", 0) for t in tally)
    failed = [c for c in cases if c["state"] == "failed"]
    lost = sum(1 for c in failed if group_of(c["file"]) in RESULT_TESTS)
    skipped = sum(1 for c in cases if c["state"] == "skipped")
    others = [c for c in cases if group_of(c["file"]) != "tests/fuzz"]
    figures = "\n".join(
        [
            f"Last run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())},"
            f" {len(cases)} tests in {took:.0f} s ({'all passed' if not failed else 'FAILURES'}).",
            "",
            f"- Fuzz cases tried: **{total:,}**; unhandled exceptions (crashes): **{crashes}**;"
            f" hangs: **{hangs}**",
            f"- Fault, interrupt, limit, output and slow-client tests: {len(others)},"
            f" failed: {sum(1 for c in others if c['state'] == 'failed')}",
            f"- Results lost or corrupted: **{lost}** (failures among the tests that check"
            " results are written whole)",
            f"- Skipped: {skipped}",
            "",
            "| Fuzzer | Cases | Crashes | Hangs | Notes |",
            "| --- | ---: | ---: | ---: | --- |",
            *fuzz,
            "",
            "| Area | Tests | Ran | Passed | Failed | Skipped |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )
    v = versions()
    report = "\n".join(
        [
            "# Reliability: faults, interrupts, limits, fuzzing",
            "",
            "Produced by `make reliability` (`python -m bench.reliability"
            f" --client-cases {args.client_cases} --server-cases {args.server_cases}"
            f" --etf-cases {args.etf_cases}`);"
            " the table of faults and what chanload does is in `docs/reliability.md`.",
            "",
            figures,
            "",
            "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
            "",
            f"pytest exit code: {code}" + ("" if not failed else "; failed: "),
            *(f"- {c['file']}::{c['name']}" for c in failed),
            "",
        ]
    )
    return report, figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client-cases", type=int, default=5000, help="per parser")
    ap.add_argument("--server-cases", type=int, default=10000, help="per server")
    ap.add_argument("--etf-cases", type=int, default=10000, help="per ETF fuzz test")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        junit, tally_path = Path(tmp) / "junit.xml", Path(tmp) / "tally.jsonl"
        code, took = run_tests(args, junit, tally_path)
        cases = outcomes(junit)
        tally = (
            [json.loads(line) for line in tally_path.read_text().splitlines()]
            if (tally_path.exists())
            else []
        )
    report, figures = render(args, cases, tally, code, took)
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(report)
    doc = DOC.read_text()
    if START in doc and END in doc:
        head, rest = doc.split(START, 1)
        _, tail = rest.split(END, 1)
        DOC.write_text(f"{head}{START}\n{figures}\n{END}{tail}")
    print(report)
    print(f"written: {REPORT}, figures in {DOC}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
