"""Executors driven against a fake pool whose "one request" is a short sleep."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from engine.load.executors import ConstantVUs, RampingVUs


class FakePool:
    """VUs run fake requests (sleeps) until stopped or past the deadline."""

    def __init__(self, request_time: float = 0.01) -> None:
        self.request_time = request_time
        self.deadline = 0.0
        self.started: list[float] = []  # when each VU started, relative to set_deadline
        self.requests: list[tuple[int, float, float]] = []  # (vu, start, end)
        self.tasks: list[asyncio.Task] = []
        self.t0 = 0.0
        self.going = asyncio.Event()
        self.connect_waits = 0

    def set_deadline(self, seconds_from_now: float) -> None:
        self.t0 = time.monotonic()
        self.deadline = self.t0 + seconds_from_now

    def start_vu(self, held: bool = False) -> int:
        vu = len(self.started)
        self.started.append(time.monotonic() - self.t0)
        self.tasks.append(asyncio.get_running_loop().create_task(self._loop(vu, held)))
        return vu

    async def connected(self, timeout: float) -> None:
        self.connect_waits += 1

    def go(self) -> None:
        self.going.set()

    def stop_vu(self, vu) -> None:
        self.tasks[vu].cancel()

    async def _loop(self, vu: int, held: bool) -> None:
        if held:
            await self.going.wait()
        while time.monotonic() < self.deadline:
            start = time.monotonic() - self.t0
            await asyncio.sleep(self.request_time)
            self.requests.append((vu, start, time.monotonic() - self.t0))

    async def wait_idle(self) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def in_flight_at(self, t: float) -> int:
        return sum(1 for _, s, e in self.requests if s <= t < e)


def test_constant_vus_runs_n_vus_until_the_deadline():
    pool = FakePool(0.02)
    asyncio.run(ConstantVUs(5, 0.5).run(pool))
    assert len(pool.started) == 5
    assert all(t < 0.05 for t in pool.started)
    assert {vu for vu, _, _ in pool.requests} == set(range(5))
    # never a request started after the deadline; in flight ones finished
    assert max(s for _, s, _ in pool.requests) < 0.5
    assert pool.in_flight_at(0.25) == 5
    assert pool.connect_waits == 1  # every VU connected before any sent


def test_ramping_vus_follow_the_seeds_steps():
    ramp = RampingVUs(20, 1.0, steps=10)
    assert [ramp.step_vus(k) for k in range(1, 11)] == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert RampingVUs(3, 10).step_vus(1) == 1  # max(1, ...)
    assert ramp.vus_at(0.05) == 2
    assert ramp.vus_at(0.95) == 20
    assert ramp.vus_at(1.0) == 0
    lines: list[str] = []
    pool = FakePool(0.01)
    asyncio.run(ramp.run(pool, lines.append))
    assert len(lines) == 10
    assert lines[0] == "  [ramp] Step 1/10: 2 VUs for 0.1s"
    assert lines[-1] == "  [ramp] Step 10/10: 20 VUs for 0.1s"
    assert len(pool.started) == 20
    # VUs join at the start of their step
    for vu, t in enumerate(pool.started):
        step = vu // 2  # two new VUs per step
        assert step * 0.1 - 0.02 <= t <= step * 0.1 + 0.06
    assert max(s for _, s, _ in pool.requests) < 1.0


@pytest.mark.parametrize(
    ("executor", "expected"),
    [
        (ConstantVUs(0, 1), "at least 1 VU"),
        (ConstantVUs(1, 0), "duration > 0"),
        (RampingVUs(0, 1), "at least 1 VU"),
        (RampingVUs(1, 1, steps=0), "at least 1 step"),
    ],
)
def test_executor_configs_validate_themselves(executor, expected):
    assert any(expected in p for p in executor.problems())


class FakeOpenPool:
    """Connections are free again ``busy`` seconds after a send."""

    def __init__(self, connections: int, busy: float) -> None:
        from engine.measure.metrics import Recorder

        self.recorder = Recorder()
        self.capacity = connections
        self.busy = busy
        self.sent: list[tuple[int, int]] = []  # (intended, actual) ns
        self.free_at: list[float] = []
        self.vus = 0

    def set_deadline(self, seconds_from_now: float) -> None:
        pass

    def start_vu(self) -> None:
        self.vus += 1

    async def ready(self, timeout: float) -> int:
        return self.vus

    def try_send(self, intended: int) -> bool:
        now = time.monotonic()
        self.free_at = [t for t in self.free_at if t > now]
        if len(self.free_at) >= self.capacity:
            self.recorder.late += 1
            return False
        self.free_at.append(now + self.busy)
        self.sent.append((intended, time.perf_counter_ns()))
        return True

    async def wait_idle(self) -> None:
        pass


def test_arrival_rate_sends_on_schedule_and_counts_drops():
    from engine.load.executors import ConstantArrivalRate

    pool = FakeOpenPool(connections=100, busy=0.001)
    asyncio.run(ConstantArrivalRate(rate=400, duration=0.5, max_connections=100).run(pool))
    assert len(pool.sent) == 200
    assert pool.recorder.scheduled == 200 and pool.recorder.late == 0
    intended = [i for i, _ in pool.sent]
    gaps = {round((b - a) / 1e6, 3) for a, b in itertools.pairwise(intended)}
    assert gaps <= {2.5, 2.499, 2.501}  # every 1/400 s, from the start, never from "now"
    lags = [(actual - i) / 1e6 for i, actual in pool.sent]
    # ms: generous, a busy or paused machine (a VM's hiccup of 80 ms was seen)
    # must not fail it; a schedule kept from "now" would lag by whole seconds.
    assert sorted(lags)[int(len(lags) * 0.99)] < 250


def test_a_slow_target_gets_late_requests_not_a_slower_schedule():
    from engine.load.executors import ConstantArrivalRate

    pool = FakeOpenPool(connections=2, busy=0.05)  # 2 connections, 50 ms each: 40 req/s max
    started = time.monotonic()
    asyncio.run(ConstantArrivalRate(rate=200, duration=0.5, max_connections=2).run(pool))
    assert time.monotonic() - started < 0.8  # the schedule did not stretch
    assert pool.recorder.scheduled == 100
    assert 10 <= len(pool.sent) <= 30
    assert pool.recorder.late == 100 - len(pool.sent)
    lags = pool.recorder.dispatch_lags
    assert len(lags) == 100 and sorted(lags)[98] < 10_000  # the scheduler itself kept up


def test_ramping_arrival_rate_steps():
    from engine.load.executors import RampingArrivalRate

    lines: list[str] = []
    pool = FakeOpenPool(connections=100, busy=0.0005)
    asyncio.run(RampingArrivalRate(1000, 1.0, 100).run(pool, lines.append))
    assert lines[0] == "  [ramp] Step 1/10: 100 req/s for 0.1s"
    assert lines[-1] == "  [ramp] Step 10/10: 1000 req/s for 0.1s"
    assert len(pool.sent) + pool.recorder.late == pool.recorder.scheduled == 550
