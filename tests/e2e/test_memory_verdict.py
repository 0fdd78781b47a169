"""The memory verdict against proxies, cold (the first run after the proxy
starts) and warm (the next run of the same process).

Proxies this project did not write, and why each (bench/proxies.py says
how each is configured):
- nginx (Debian's nginx-light) holding whole request bodies in memory: a C
  proxy that buffers, with glibc's mmap threshold fixed so the memory of
  each body is given back (else a warm run looks flat: RSS's limit, README);
  and nginx streaming (`proxy_request_buffering off`, `proxy_buffering off`).
- mitmproxy (PyPI, `make mitmproxy`) in reverse-proxy mode, holding whole
  bodies (its default): a Python proxy whose allocator keeps and reuses what
  it freed, checked cold; and streaming every body (`stream_large_bodies=1`):
  a Python proxy that grows by about the bodies in flight on its first large
  bodies (its allocator warming up), the case the seed's one-figure rule
  gets wrong.
And chanproxy, streaming and with --buffer.

Each run: large_payload, 10 VUs x 1 MiB (1.25 MiB for mitmproxy streaming), a
ladder of 1 s steps. The proxies are started by bench/proxies.py, which
`make perf-ladder` also uses to measure the ladder's ratios on them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.proxies import Proxy, start_proxy
from tests.support import run_chanload, start_sink

pytestmark = pytest.mark.slow
MIB = 1024 * 1024


def verdicts(
    tmp_path: Path, proxy: Proxy, sink_url: str, runs: int, size: str = str(MIB)
) -> list[dict]:
    out = []
    for _ in range(runs):
        run = run_chanload(
            tmp_path,
            "--scenario", "large_payload", "--channel-url", proxy.url, "--sink", sink_url,
            "--concurrency", "10", "--payload-size", size, "--duration", "2",
            "--memory-ladder", "1",
            "--target-pid", str(proxy.pid), "--sample-interval", "0.2", "--quiet",
            timeout=120,
        )  # fmt: skip
        assert run.code == 0, run.stderr + run.stdout[-3000:]
        r = run.result
        assert r["error_count"] == 0, r["error_samples"]
        assert r["memory_ladder"] is not None, run.stdout[-3000:]
        assert f" Verdict:     {r['memory_verdict']}" in run.stdout
        out.append(r)
    return out


@pytest.mark.parametrize(
    ("proxy", "mode", "word"),
    [
        ("nginx", "buffer", "buffering suspected"),
        ("nginx", "stream", "streaming"),
        ("chanproxy", "buffer", "buffering suspected"),
        ("chanproxy", "stream", "streaming"),
    ],
)
def test_the_verdict_holds_cold_and_warm(tmp_path, proxy, mode, word):
    sink = start_sink(tmp_path)
    target = start_proxy(proxy, mode, sink.port, tmp_path / proxy)
    try:
        cold, warm = verdicts(tmp_path, target, sink.url, runs=2)
    finally:
        target.stop()
        sink.stop()
    for when, r in (("cold", cold), ("warm", warm)):
        assert r["memory_verdict"].startswith(word), f"{when}: {r['memory_verdict']}"
        # The seed's figures stay, from the load itself.
        m = r["memory"]
        assert m["start_bytes"] > 0 and m["max_bytes"] >= m["start_bytes"]
    if word == "buffering suspected":
        # The whole bodies in flight show up, on the warm target too (the median pass).
        passes = warm["memory_ladder"]["passes"]
        rises = sorted(p[-1]["peak_growth_bytes"] - p[0]["peak_growth_bytes"] for p in passes)
        assert len(passes) == 3 and rises[1] >= 6 * MIB, rises


def test_a_buffering_python_proxy_is_never_called_streaming(tmp_path):
    """mitmproxy without stream_large_bodies holds whole bodies (and more, until
    its garbage collector runs). Cold, the ladder's first pass follows the
    bodies; its allocator then reuses what it freed, so the warm pass can look
    flat (RSS's limit), but the run after it grows again: buffering suspected
    or inconclusive, never streaming."""
    sink = start_sink(tmp_path)
    target = start_proxy("mitmproxy", "buffer", sink.port, tmp_path / "mitmproxy")
    try:
        (cold,) = verdicts(tmp_path, target, sink.url, runs=1)
    finally:
        target.stop()
        sink.stop()
    first = cold["memory_ladder"]["passes"][0]
    assert first[-1]["peak_growth_bytes"] - first[0]["peak_growth_bytes"] >= 4 * 1024 * 1024
    assert cold["memory_verdict"].split(":")[0] in ("buffering suspected", "inconclusive"), cold[
        "memory_verdict"
    ]


def test_the_one_figure_rule_flags_a_cold_streaming_proxy_the_ladder_does_not(tmp_path):
    """mitmproxy streaming every body (the issue's case), cold then warm, with
    bodies of 1.25 MiB: larger than what it reads and queues per connection
    (at 1 MiB it holds part of each body, about as much as a cold allocator
    grows: no rule tells them apart, README). Its first large bodies grow it
    by 9 to 11 MB (bench_results/perf-ladder.md), over half of the 12.5 MB
    in flight, so the seed's rule, applied to that cold growth (the JSON's
    `one_figure_verdict`), says buffering. The ladder says streaming, cold
    and warm."""
    sink = start_sink(tmp_path)
    target = start_proxy("mitmproxy", "stream", sink.port, tmp_path / "mitmproxy")
    try:
        cold, warm = verdicts(tmp_path, target, sink.url, runs=2, size=str(5 * MIB // 4))
    finally:
        target.stop()
        sink.stop()
    old = cold["memory_ladder"]["one_figure_verdict"]
    assert old.startswith("buffering suspected"), old
    for when, r in (("cold", cold), ("warm", warm)):
        assert r["memory_verdict"].startswith("streaming"), f"{when}: {r['memory_verdict']}"
