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
