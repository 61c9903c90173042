"""The server's memory budget for images: the bytes every request's loaded images may hold at
once (their views' pixels, waiting for the model and running), shared first come, first served.
Decoding is bounded apart: each image's decoding by the decoding budget, from its header
(`edge/decode.py`), and only `--workers` images are decoded at once.

A request's images are loaded in groups of at most `--max-batch`: a group waits until its share
fits (`ByteBudget.hold`), is decoded, holds its views' pixels (`Held.keep`: what they really
take) while its batch runs, and gives its share back before the next group is loaded. A group
alone larger than the whole budget runs when nothing else holds any of it, so every request goes
through.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..engine import Renderer, reachable
from ..tiling import view_count

FLOAT_RGB = 3 * 4  # bytes per pixel of a model input: float32 RGB


def views_bytes(renderer: Renderer, tiling: bool | None) -> int:
    """The bytes one loaded image holds until its batch has run: its views' float pixels (for the
    largest model input the routing can reach; decoding itself is bounded per decoding thread by
    `edge.decode.decode_budget`, and only `--workers` images are decoded at once)."""
    views = view_count(renderer.tiling if tiling is None else tiling)
    metas = [renderer.meta(r) for r in reachable(renderer.routing)]
    return max((1 if m.views_in_graph else views) * m.input_size[0] * m.input_size[1] * FLOAT_RGB for m in metas)


@dataclass
class Held:
    """A share of the budget, held while its images are loaded and classified."""

    budget: ByteBudget
    n: int

    def keep(self, n: int) -> None:
        """Hold only `n` bytes from now on (what the loaded images keep), giving the rest back."""
        n = min(n, self.n)
        self.budget._give(self.n - n)
        self.n = n


class ByteBudget:
    """`total` bytes shared by requests, first come, first served (on the event loop)."""

    def __init__(self, total: int):
        if total < 1:
            raise ValueError("the image memory budget must be at least 1 byte")
        self.total, self.free = total, total
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    @contextlib.asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[Held]:
        """Wait until `n` bytes (at most the whole budget) are free, and hold them."""
        n = max(0, min(n, self.total))
        if self._waiting or self.free < n:
            granted = asyncio.get_running_loop().create_future()
            self._waiting.append((n, granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._give(n)
                else:
                    self._waiting.remove((n, granted))
                    self._give(0)
                raise
        else:
            self.free -= n
        held = Held(self, n)
        try:
            yield held
        finally:
            self._give(held.n)
            held.n = 0

    def _give(self, n: int) -> None:
        self.free += n
        while self._waiting and self._waiting[0][0] <= self.free:
            n_next, granted = self._waiting.popleft()
            if granted.done():  # its request went away
                continue
            self.free -= n_next
            granted.set_result(None)


def return_freed_memory() -> None:
    """Make glibc hand large blocks back to the system as soon as they are freed (a fixed mmap
    threshold of 1 MiB: decoded images and views live in their own mappings), so a burst of large
    requests does not leave the server's resident memory high. A no-op elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 2**20)  # M_MMAP_THRESHOLD (a set value also stops its growth)
    except (OSError, AttributeError, TypeError):
        return
