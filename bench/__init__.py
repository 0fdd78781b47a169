"""Benchmarks and report generators (make perf-sink, perf-engine, perf-proxy,
reliability): they write bench_results/; they are not tests."""
