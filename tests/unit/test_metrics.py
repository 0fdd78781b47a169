from __future__ import annotations

from engine.measure.metrics import HIGHEST_US, Recorder


def test_recorder_folds_and_snapshots_per_interval():
    rec = Recorder()
    rec.latencies += [100] * 90 + [1000] * 10
    rec.statuses[200] = 95
    rec.statuses[503] = 5
    rec.error("timeout", "slow")
    snap = rec.snapshot(1.0, 1.0, vus=4)
    assert snap.requests == 101  # 100 responses + 1 transport error
    assert snap.errors == 6  # 1 transport + 5 server errors
    assert snap.p50_us == 100 and 990 <= snap.p99_us <= 1001
    assert snap.vus == 4
    assert snap.statuses == {200: 95, 503: 5}
    # the next interval only holds what happened since
    rec.latencies += [50] * 10
    rec.statuses[200] += 10
    snap2 = rec.snapshot(2.0, 1.0, vus=4)
    assert snap2.requests == 10 and snap2.errors == 0
    assert snap2.p99_us == 50
    assert snap2.statuses == {200: 10}
    assert rec.histogram.get_total_count() == 110
    assert rec.error_samples["timeout"] == "slow"


def test_out_of_range_latencies_are_counted_not_dropped():
    rec = Recorder()
    rec.latencies += [HIGHEST_US * 2, 0]
    rec.fold()
    assert rec.out_of_range == 1
    rec.snapshot(1.0, 1.0, 1)
    assert rec.histogram.get_total_count() == 2


def test_empty_intervals_do_not_spoil_the_minimum():
    rec = Recorder()
    rec.snapshot(1.0, 1.0, 1)  # nothing happened in the first second
    rec.latencies += [2_000_000, 2_500_000]
    rec.statuses[200] = 2
    rec.snapshot(2.0, 1.0, 1)
    rec.close()
    assert 1_990_000 <= rec.histogram.get_min_value() <= 2_000_000


def test_min_and_max_are_exact():
    rec = Recorder()
    rec.latencies += [2_000_123, 1_999_999, 3_000_001]
    rec.fold()
    assert (rec.min_us, rec.max_us) == (1_999_999, 3_000_001)


def test_server_timing_keeps_the_first_sixteen_names_and_counts_the_rest():
    from engine.measure.metrics import MAX_TIMING_NAMES

    rec = Recorder()
    for i in range(MAX_TIMING_NAMES + 4):
        slot = rec.timing_slot(f"m{i}")
        if slot is not None:
            slot.append(1000)
    assert len(rec.timing_pending) == MAX_TIMING_NAMES
    assert rec.timing_ignored == 4
    rec.fold()
    assert set(rec.timing) == {f"m{i}" for i in range(MAX_TIMING_NAMES)}
    # After a fold a kept name gets a fresh slot; a new one still does not.
    assert rec.timing_slot("m0") == []
    assert rec.timing_slot("new") is None and rec.timing_ignored == 5


def test_workers_together_keep_sixteen_names_too():
    from engine.measure.metrics import MAX_TIMING_NAMES

    exports = []
    for worker in range(2):
        rec = Recorder()
        for i in range(MAX_TIMING_NAMES):
            rec.timing_slot(f"w{worker}-{i}").append(500)
        exports.append(rec.export())
    parent = Recorder()
    parent.absorb(exports)
    assert len(parent.timing) == MAX_TIMING_NAMES
    assert parent.timing_ignored == MAX_TIMING_NAMES  # the second worker's values, one each


def test_generator_cpu_is_per_second_of_load_and_flags_a_busy_process():
    from types import SimpleNamespace

    from engine.measure.result import generator_cpu
    from engine.report.console import generator_lines

    calm = generator_cpu([1.0, 0.5, 0.1], elapsed=2.0)
    assert calm == {"cores": 0.8, "busiest_process": 0.5, "processes": 3, "busy": False}
    busy = generator_cpu([1.9], elapsed=2.0)
    assert busy is not None and busy["busy"] and busy["busiest_process"] == 0.95
    assert generator_cpu([], elapsed=2.0) is None
    lines = generator_lines(SimpleNamespace(generator_cpu=busy))
    assert lines[0] == " Generator:   CPU 0.95 cores (95% of a core)"
    assert "may measure chanload rather than the target" in lines[1]
    assert len(generator_lines(SimpleNamespace(generator_cpu=calm))) == 1
