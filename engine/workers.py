"""--workers N: N processes share one run's load, each with its own event loop.

One Python process drives one core. With ``--workers N`` the parent (which
keeps everything else: the banner, the preflight, the Lightning session, the
memory probe, the report) starts N copies of this module, each with a share
of the connections (``--concurrency`` split as evenly as whole numbers go)
and of the rate (``--rate``/N each, worker i offset by i/rate so that the
shares interleave into the single schedule). Every worker starts at the same
``time.perf_counter()`` instant (CLOCK_MONOTONIC, shared by all processes on
the machine) and ticks on the same whole seconds, so interval k of every
worker covers the same second; at the end each sends its Recorder's export
and the parent adds them up exactly (histograms added, counters summed).

Parent and worker talk over the worker's stdin and stdout in frames: a 4-byte
big-endian length, then a pickle (both ends are this same program):

    parent -> worker   ("setup", config, url, server_timing, index, count)
    worker -> parent   ("ready",)
    parent -> worker   ("go", start_at)
    worker -> parent   ("tick", snapshot) ... once a second
    parent -> worker   ("stop",)  only when interrupted (Ctrl-C: engine.interrupt)
    worker -> parent   ("done", export, elapsed, started_epoch)

A worker ignores SIGINT (Ctrl-C reaches the whole process group): the parent
decides, and sends "stop"; a worker whose parent went away (EOF) stops too.

A worker's stderr goes to a file that the parent shows if the worker fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import struct
import sys
import tempfile
import threading
import time
from dataclasses import asdict, replace
from typing import Any, BinaryIO

from common import eventloop
from common.children import python_module
from engine.drive import load, make_executor
from engine.measure.metrics import Recorder, Snapshot, combine_snapshots
from engine.target import TargetError

FRAME = struct.Struct("!I")
READY_TIMEOUT = 30.0  # seconds for every worker to start (import, build its pool)
START_SLACK = 0.05  # seconds between "go" and the shared start


class WorkerError(TargetError):
    """A worker failed: the run cannot be reported."""


def encode(message: tuple) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(body)) + body


# -- the parent ---------------------------------------------------------------


class _Worker:
    def __init__(self, index: int, proc: asyncio.subprocess.Process, log) -> None:
        self.index = index
        self.proc = proc
        self.log = log
        self.ticks: list[dict] = []
        self.done: tuple | None = None

    async def receive(self) -> tuple:
        assert self.proc.stdout is not None
        try:
            head = await self.proc.stdout.readexactly(FRAME.size)
            (size,) = FRAME.unpack(head)
            return pickle.loads(await self.proc.stdout.readexactly(size))
        except asyncio.IncompleteReadError:
            await self.proc.wait()
            raise WorkerError(self.failure()) from None

    def send(self, message: tuple) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode(message))

    def failure(self) -> str:
        self.log.seek(0)
        tail = self.log.read().decode("utf-8", "replace").strip().splitlines()[-15:]
        code = self.proc.returncode
        how = f"exit code {code}" if code is None or code >= 0 else f"signal {-code}"
        detail = ("\n" + "\n".join("    " + line for line in tail)) if tail else ""
        return f"worker {self.index + 1} stopped before reporting ({how}){detail}"


async def run_workers(
    config,
    url,
    server_timing: bool,
    count: int,
    recorder: Recorder,
    *,
    on_start=None,
    on_tick=None,
    announce=None,
    stop: asyncio.Event | None = None,
) -> tuple[float, float]:
    """Run ``config``'s load in ``count`` processes into ``recorder``; (seconds, epoch start).

    When ``stop`` is set, every worker is told to stop (as an interrupted run).
    """
    # The workers need no secrets and no command line: the parent reports.
    shared = replace(
        config,
        cookie=None,
        argv=(),
        csv=None,
        json=None,
        hdr_log=None,
        charts=None,
        thresholds=(),
        progress=False,
    )
    workers: list[_Worker] = []
    try:
        for index in range(count):
            log = tempfile.TemporaryFile(prefix="chanload-worker-")  # noqa: SIM115 - closed below
            proc = await asyncio.create_subprocess_exec(
                *python_module("engine.workers"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
            worker = _Worker(index, proc, log)
            workers.append(worker)
            worker.send(("setup", shared, url, server_timing, index, count))
        async with asyncio.timeout(READY_TIMEOUT):
            for worker in workers:
                message = await worker.receive()
                if message[0] != "ready":
                    raise WorkerError(f"worker {worker.index + 1} said {message[0]!r}, not ready")
        start_at = time.perf_counter() + START_SLACK
        for worker in workers:
            worker.send(("go", start_at))
        seconds = _Seconds(workers, on_tick)
        readers = [asyncio.create_task(_read(w, seconds)) for w in workers]
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        if on_start is not None:
            on_start()
        speaker = None
        whole = make_executor(config)
        if announce is not None and hasattr(whole, "announcements"):
            speaker = asyncio.create_task(_announce(whole.announcements(), start_at, announce))
        relay = asyncio.create_task(_relay_stop(stop, workers)) if stop is not None else None
        try:
            await asyncio.gather(*readers)
        finally:
            for task in readers:
                task.cancel()
            for task in (speaker, relay):
                if task is not None:
                    task.cancel()
        exports = []
        elapsed, started = 0.0, float("inf")
        for worker in workers:
            assert worker.done is not None
            export, worker_elapsed, worker_started = worker.done
            exports.append(export)
            elapsed = max(elapsed, worker_elapsed)
            started = min(started, worker_started)
        recorder.absorb(exports)
        return elapsed, started
    except TimeoutError:
        late = [w.index + 1 for w in workers if w.proc.returncode is None]
        raise WorkerError(
            f"workers {late} did not start within {READY_TIMEOUT:g}s (is the machine overloaded?)"
        ) from None
    finally:
        for worker in workers:
            if worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await worker.proc.wait()
            worker.log.close()


class _Seconds:
    """The live progress line: second k is shown once every running worker has sent it."""

    def __init__(self, workers: list[_Worker], on_tick) -> None:
        self.workers = workers
        self.on_tick = on_tick
        self.shown = 0
        self.last_t = 0.0

    def update(self) -> None:
        k = self.shown
        while self.on_tick is not None and all(
            len(w.ticks) > k or w.done is not None for w in self.workers
        ):
            snaps = [w.ticks[k] for w in self.workers if len(w.ticks) > k]
            if not snaps:
                return
            snap = combine_snapshots(snaps, self.last_t)
            self.on_tick(snap.t, snap)
            self.shown = k = k + 1
            self.last_t = snap.t


async def _read(worker: _Worker, seconds: _Seconds) -> None:
    while True:
        message = await worker.receive()
        if message[0] == "tick":
            worker.ticks.append(message[1])
        elif message[0] == "done":
            worker.done = message[1:]
            seconds.update()
            return
        else:
            raise WorkerError(f"worker {worker.index + 1} sent {message[0]!r}")
        seconds.update()


async def _relay_stop(stop: asyncio.Event, workers: list[_Worker]) -> None:
    await stop.wait()
    for worker in workers:
        if worker.proc.returncode is None and worker.done is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                worker.send(("stop",))


async def _announce(lines: list[tuple[float, str]], start_at: float, announce) -> None:
    for offset, line in lines:
        await asyncio.sleep(max(0.0, start_at + offset - time.perf_counter()))
        announce(line)


# -- a worker -----------------------------------------------------------------


def _read_frame(stream: BinaryIO) -> Any:
    head = stream.read(FRAME.size)
    if len(head) < FRAME.size:
        raise SystemExit(0)  # the parent went away
    (size,) = FRAME.unpack(head)
    return pickle.loads(stream.read(size))


def send(frames: BinaryIO, message: tuple) -> None:
    frames.write(encode(message))
    frames.flush()


def main() -> None:
    # Ctrl-C goes to the whole process group: the parent decides and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Frames go to the real stdout; anything printed by accident goes to stderr.
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    commands = sys.stdin.buffer

    _, config, url, server_timing, index, count = _read_frame(commands)
    executor = make_executor(config, index, count)
    send(frames, ("ready",))
    _, start_at = _read_frame(commands)
    recorder = Recorder(config.expected)

    def tick(_now: float, snap: Snapshot) -> None:
        send(frames, ("tick", asdict(snap)))

    async def drive() -> tuple[float, float]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def listen() -> None:
            # The next frame can only be "stop"; EOF (the parent went away) stops too.
            with contextlib.suppress(BaseException):
                _read_frame(commands)
            with contextlib.suppress(RuntimeError):  # the loop may be closed by then
                loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=listen, name="stop-listener", daemon=True).start()
        return await load(
            config, url, server_timing, recorder, executor, on_tick=tick, start_at=start_at,
            stop=stop,
        )  # fmt: skip

    elapsed, started = eventloop.run(drive())
    send(frames, ("done", recorder.export(), elapsed, started))


if __name__ == "__main__":
    main()
