"""The one pipeline under every entry point: read -> load -> batch -> run -> match.

    inputs ─> load_one (worker threads): read (bytes, or RGB pixels) ─ per image: error ─> Renderer.load
          ─> batches of `batch` loaded inputs, in input order
          ─> run(the batch's prepared items): Engine.classify (verdicts), or view scores (eval, the gate)
          ─> match: each input with its result, or None when it failed to load (its `error`)
          ─> (Loaded, result | None), in input order

`stream` is the whole of it, as a generator (scan, eval, the precision gate); the server
(its own batcher across requests), Ray (decoding tasks, then model actors) and the camera (a
live source: one newest frame at a time, never read ahead) use its parts, `load_one` and
`run_loaded` (run a group's prepared items, `match` the results back). An image's failure is
that image's (`edge.errors`: setup errors stop the run); reading counts as decoding time, and
a failed image has no timings.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from .decode import Decoded
from .engine import Prepared, Renderer
from .errors import image_error, try_image

K = TypeVar("K")
T = TypeVar("T")
# an input -> its file bytes, its RGB pixels (CIFAR arrays) or its decoded BGR pixels (camera frames)
Read = Callable[[Any], "bytes | np.ndarray | Decoded"]


@dataclass
class Loaded(Generic[K]):
    """One input's outcome of loading: its prepared item, or its error (and the exception raised)."""

    key: K
    prepared: Prepared | None
    error: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    exception: BaseException | None = None

    @property
    def nbytes(self) -> int:
        """The bytes it holds: its views' pixels, and the decoded image when kept (to draw on)."""
        p = self.prepared
        if p is None:
            return 0
        return p.pixels.nbytes + (p.decoded.bgr.nbytes if p.decoded is not None else 0)


def render(renderer: Renderer, data: bytes | np.ndarray | Decoded, *, routing: str | None = None,
           tiling: bool | None = None, keep_image: bool = False,
           timings_ms: dict[str, float] | None = None) -> Prepared:
    """Bytes through `Renderer.load`; pixels through `Renderer.prepare`: decoded BGR pixels (a camera
    frame) as they are, RGB pixels (a CIFAR array) as BGR."""
    if isinstance(data, Decoded):
        return renderer.prepare(data, routing=routing, tiling=tiling, timings_ms=timings_ms)
    if isinstance(data, np.ndarray):
        bgr = np.ascontiguousarray(data[..., ::-1])
        return renderer.prepare(Decoded(bgr, bgr.shape[1], bgr.shape[0]), routing=routing, tiling=tiling,
                                timings_ms=timings_ms)
    return renderer.load(data, routing=routing, tiling=tiling, keep_image=keep_image, timings_ms=timings_ms)


def load_one(key: K, read: Read, renderer: Renderer, *, routing: str | None = None, tiling: bool | None = None,
             keep_image: bool = False) -> Loaded[K]:
    """Read one input and load it (decode, route, views): the one loader of every entry point."""
    t0 = time.perf_counter()
    data, exc = try_image(read, key)
    timings = {"decode": (time.perf_counter() - t0) * 1e3}
    prepared = None
    if data is not None:
        prepared, exc = try_image(render, renderer, data, routing=routing, tiling=tiling, keep_image=keep_image,
                                timings_ms=timings)
    if exc is not None:
        return Loaded(key, None, image_error(exc), {}, exc)
    return Loaded(key, prepared, None, dict(prepared.timings_ms))


def match(loaded: Sequence[Loaded], results: Sequence[T]) -> list[T | None]:
    """Each loaded input's result, in order: `results` holds one per input that was prepared
    (in their order); an input that failed to load gets None."""
    it = iter(results)
    out = [next(it, _MISSING) if x.prepared is not None else None for x in loaded]
    if any(r is _MISSING for r in out) or next(it, _MISSING) is not _MISSING:
        raise ValueError(f"{len(results)} results for {sum(x.prepared is not None for x in loaded)} loaded inputs")
    return out


_MISSING: Any = object()


def run_loaded(loaded: Sequence[Loaded], run: Callable[[list[Prepared]], Sequence[T]]) -> list[T | None]:
    """The step after loading, shared by every entry point that runs a group itself: `run` on the
    prepared items of `loaded` (one call, none when nothing loaded), each input matched with its
    result (`match`: None when it failed to load)."""
    ready = [x.prepared for x in loaded if x.prepared is not None]
    return match(loaded, run(ready) if ready else [])


READ_AHEAD_BYTES = 256 * 2**20  # what `stream` holds of inputs loaded ahead (their views, kept images)


class _Gate:
    """The read-ahead's byte budget: the bytes of loaded inputs not yet handed on (`held`). A load
    starts only under the budget, or when the consumer waits for that very input (so it never stalls)."""

    def __init__(self, budget: int):
        self.budget, self.held, self.wanted, self.closed = budget, 0, -1, False
        self._cond = threading.Condition()

    def over(self) -> bool:
        with self._cond:
            return self.held >= self.budget

    def enter(self, index: int) -> bool:
        """Wait until input `index` may load; False once the stream is closed."""
        with self._cond:
            self._cond.wait_for(lambda: self.closed or self.held < self.budget or index <= self.wanted)
            return not self.closed

    def add(self, n: int) -> None:
        with self._cond:
            self.held += n

    def release(self, n: int) -> None:
        with self._cond:
            self.held -= n
            self._cond.notify_all()

    def want(self, index: int) -> None:
        with self._cond:
            self.wanted = max(self.wanted, index)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def stream(inputs: Iterable[K], load: Callable[[K], Loaded[K]], run: Callable[[list[Prepared]], Sequence[T]],
           batch: int = 1, workers: int = 2, max_bytes: int = READ_AHEAD_BYTES) -> Iterator[tuple[Loaded[K], T | None]]:
    """(loaded input, its result or None), in input order: `load` in `workers` threads (a bounded
    window ahead: at most 2 x `batch` + `workers` inputs, holding at most `max_bytes` of loaded inputs
    beyond those the consumer waits for), `run` on the prepared items of each `batch` inputs (fewer
    when the loaded ones reach `max_bytes`). Close it (or exhaust it) to stop the threads."""
    window = max(2 * batch + workers, 4)
    gate = _Gate(max_bytes)

    def gated(index: int, key: K) -> Loaded[K]:
        if not gate.enter(index):
            return Loaded(key, None, "not loaded: the scan stopped")
        loaded = load(key)
        gate.add(loaded.nbytes)
        return loaded

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode")
    pending: deque[tuple[int, Future[Loaded[K]]]] = deque()
    todo = enumerate(inputs)
    try:
        while True:
            while len(pending) < window and (item := next(todo, _MISSING)) is not _MISSING:
                pending.append((item[0], pool.submit(gated, *item)))
            if not pending:
                return
            group: list[Loaded[K]] = []
            while pending and len(group) < batch and not (group and gate.over() and not pending[0][1].done()):
                gate.want(pending[0][0])
                group.append(pending.popleft()[1].result())
            ready = deque(zip(group, run_loaded(group, run), strict=True))
            del group
            while ready:
                loaded, result = ready.popleft()
                yield loaded, result
                n = loaded.nbytes
                del loaded, result
                gate.release(n)
    finally:
        gate.close()
        pool.shutdown(wait=True, cancel_futures=True)
