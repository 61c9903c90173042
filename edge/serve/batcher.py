"""Micro-batching: concurrent requests' images gathered into one model call, off the event loop.

A request is admitted (`admit`) before its body is read; at most `max_pending`
requests are in flight at once (reading, decoding, waiting or running), and the
next one gets `Busy` (503 with Retry-After), so the memory the server holds never
grows with the load (their images' memory: `admission.py`). An admitted request
submits its prepared images (`submit`; more than `max_images` are queued in parts
of `max_images`); the batcher's task takes the queued requests in order, up to
`max_images` images, and waits for more (up to `max_wait_ms`) only while other admitted
requests are still being decoded: a lone request runs at once. The batch runs
in the batcher's one worker thread (the model's thread), while the event loop
goes on receiving and decoding; requests that arrive meanwhile form the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..engine import Prepared, Verdict
from .engines import Job
from .metrics import Metrics

RunBatch = Callable[[list[Job]], "list[list[Verdict] | Exception]"]


class Busy(Exception):
    """Too many requests in flight: try again later."""


@dataclass
class _Queued:
    items: list[Prepared]
    threshold: float | None
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchInfo:
    """How a request's images were run: time queued, the batch's wall time and size."""

    queue_ms: float
    batch_ms: float
    batch_images: int


class Batcher:
    """Gathers submitted images into batches run by `run` (e.g. `engines.Classifier`) in one thread."""

    def __init__(self, run: RunBatch, max_images: int = 8, max_wait_ms: float = 5.0, max_pending: int = 32,
                 metrics: Metrics | None = None):
        if max_images < 1 or max_pending < 1 or max_wait_ms < 0:
            raise ValueError("max_images and max_pending must be >= 1, max_wait_ms >= 0")
        self.run, self.max_images, self.max_wait = run, max_images, max_wait_ms / 1e3
        self.max_pending, self.metrics = max_pending, metrics
        self.in_flight = 0  # admitted requests not yet answered
        self._submitted = 0  # of them, those whose images are queued or running
        self._queue: deque[_Queued] = deque()
        self._queued_images = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    # -- the event loop's side --------------------------------------------------------
    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="sixview-batcher")

    async def stop(self) -> None:
        """Stop the task; requests still queued get an error."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._queue:
            q = self._queue.popleft()
            if not q.future.done():
                q.future.set_exception(Busy("the server is shutting down"))
        self._thread.shutdown(wait=True, cancel_futures=True)

    def in_model_thread(self, fn: Callable[[], Any]) -> asyncio.Future:
        """Run `fn` in the model's thread (after the batch running now): e.g. a warm-up."""
        return asyncio.get_running_loop().run_in_executor(self._thread, fn)

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of the `max_pending` places while a request is served; `Busy` when none is free."""
        if self.in_flight >= self.max_pending:
            raise Busy(f"{self.in_flight} requests in flight (--queue {self.max_pending})")
        self.in_flight += 1
        self._gauge()
        try:
            yield
        finally:
            self.in_flight -= 1
            self._gauge()
            if self._wake is not None:
                self._wake.set()  # the gatherer may be waiting for this request's images

    async def submit(self, items: list[Prepared], threshold: float | None = None) -> tuple[list[Verdict], BatchInfo]:
        """Queue one admitted request's images, in parts of at most `max_images` (no model call takes
        more); their verdicts once their batches have run."""
        if self._task is None or self._wake is None:
            raise RuntimeError("Batcher.start() was not called")
        if self._task.done():
            raise RuntimeError("the batcher has stopped")
        loop = asyncio.get_running_loop()
        parts = [_Queued(items[i:i + self.max_images], threshold, loop.create_future())
                 for i in range(0, len(items), self.max_images)]
        for q in parts:
            self._queue.append(q)
            self._queued_images += len(q.items)
        self._submitted += 1
        self._gauge()
        self._wake.set()
        try:
            done = await asyncio.gather(*(q.future for q in parts), return_exceptions=True)
        finally:
            self._submitted -= 1
        for r in done:
            if isinstance(r, BaseException):
                raise r
        infos = [info for _, info in done]
        return ([v for verdicts, _ in done for v in verdicts],
                BatchInfo(infos[0].queue_ms, sum(i.batch_ms for i in infos), max(i.batch_images for i in infos)))

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self._queued_images)
            self.metrics.in_flight.set(self.in_flight)

    def _expecting(self) -> bool:
        """Whether admitted requests are still reading or decoding (their images will come soon)."""
        return self.in_flight > self._submitted

    async def _gather(self) -> list[_Queued]:
        """The next batch: queued requests (or parts of one) in order, up to `max_images` images."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        batch = [self._queue.popleft()]
        n = len(batch[0].items)
        deadline = loop.time() + self.max_wait
        while n < self.max_images:
            if self._queue:
                if n + len(self._queue[0].items) > self.max_images:
                    break
                batch.append(self._queue.popleft())
                n += len(batch[-1].items)
                continue
            left = deadline - loop.time()
            if not self._expecting() or left <= 0:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
        self._queued_images -= n
        self._gauge()
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [q for q in await self._gather() if not q.future.done()]  # done: the client went away
            if not batch:
                continue
            t0 = time.perf_counter()
            results: list[Any]
            try:
                results = await loop.run_in_executor(self._thread, self.run, [(q.items, q.threshold) for q in batch])
            except Exception as e:  # noqa: BLE001 (a failed batch fails its requests, not the server)
                results = [e] * len(batch)
            t1 = time.perf_counter()
            n = sum(len(q.items) for q in batch)
            for q, r in zip(batch, results, strict=True):
                if q.future.done():
                    continue
                if isinstance(r, BaseException):
                    q.future.set_exception(r)
                else:
                    q.future.set_result((r, BatchInfo((t0 - q.queued) * 1e3, (t1 - t0) * 1e3, n)))
