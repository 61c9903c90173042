"""Admission and decoding lanes: what keeps slow or large requests from holding up the others.

- `Places`: a bounded count of requests in one state (bodies being received; requests with a
  large image in flight); `Busy` (503) when full. The batcher's queue places (`Batcher.admit`)
  are taken only once a request's body is complete, so a client that sends slowly holds a
  receiving place, never a queue place (and the guard, `guard.py`, ends it at the minimum rate).
- `DecodeLanes`: the decoding threads as two lanes: images whose header declares more than
  `large_pixels` pixels are decoded in a lane of their own (one thread), the rest in `workers`
  threads, so a few huge images never make a small photo wait for a decoding thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from ..headers import probe
from .batcher import Busy


def declared_pixels(data: bytes) -> int:
    """The pixels an image's header declares (`edge.headers.probe`, as decoding reads it; 0 when the header
    cannot be read); nothing is decoded."""
    try:
        return probe(data).pixels
    except Exception:  # noqa: BLE001 (not an image: decoding will say so, in the ordinary lane)
        return 0


class Places:
    """At most `limit` holders at once; `hold()` raises `Busy` when none is free."""

    def __init__(self, limit: int, what: str, option: str, gauge: Callable[[int], None] | None = None):
        self.limit, self.what, self.option, self.held = limit, what, option, 0
        self.gauge = gauge or (lambda n: None)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self.held >= self.limit:
            raise Busy(f"{self.held} {self.what} ({self.option} {self.limit})")
        self.held += 1
        self.gauge(self.held)
        try:
            yield
        finally:
            self.held -= 1
            self.gauge(self.held)


class DecodeLanes(Executor):
    """An executor of two lanes: a call whose arguments hold an upload declaring more than `large_pixels`
    pixels runs in the large images' lane (`large_workers` threads), any other in `workers` threads."""

    def __init__(self, workers: int, large_pixels: int, large_workers: int = 1):
        self.large_pixels = large_pixels
        self.normal = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        self.large = ThreadPoolExecutor(max_workers=large_workers, thread_name_prefix="decode-large")

    def is_large(self, data: bytes) -> bool:
        return declared_pixels(data) > self.large_pixels

    def lane(self, args: tuple[Any, ...]) -> ThreadPoolExecutor:
        for a in args:
            data = getattr(a, "data", None)
            if isinstance(data, bytes) and self.is_large(data):
                return self.large
        return self.normal

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self.lane(args).submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.normal.shutdown(wait=wait, cancel_futures=cancel_futures)
        self.large.shutdown(wait=wait, cancel_futures=cancel_futures)
