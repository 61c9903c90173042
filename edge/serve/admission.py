"""The server's memory budget for images: what one image costs before it is decoded (from its
header), and the bytes every request's images may hold at once (decoding, waiting for the model,
running), shared first come, first served.

A request's images are loaded in groups of at most `--max-batch`: a group waits until its cost
fits (`ByteBudget.hold`), is decoded, keeps only its views' pixels (`Held.keep`) while its
batch runs, and gives its share back before the next group is loaded. A group alone larger than
the whole budget runs when nothing else holds any of it, so every request goes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..decode import plan
from ..engine import Renderer, route
from ..errors import PerInputError
from ..headers import SLACK
from ..tiling import view_count

FLOAT_RGB = 3 * 4  # bytes per pixel of a model input: float32 RGB


def image_cost(renderer: Renderer, data: bytes, routing: str | None, tiling: bool | None) -> int:
    """The bytes loading `data` holds at its peak: its decoding (at the size its model needs, from
    the header) and its views' pixels. An image that will fail (no image, over a limit) costs its views."""
    roles: list[str] = []

    def target(w: int, h: int) -> tuple[float, tuple[int, int]]:
        roles.append(route(w, h, routing or renderer.routing))
        meta = renderer.meta(roles[0])
        return meta.view_fraction, meta.input_size

    try:
        _, _, decoding = plan(data, target, renderer.max_pixels)
    except PerInputError:
        decoding = 0
    decoding = max(0, decoding - SLACK)  # the decoders' own buffers: counted once per decoding thread
    role = roles[0] if roles else route(1024, 1024, routing or renderer.routing)
    h, w = renderer.meta(role).input_size
    views = view_count(renderer.tiling if tiling is None else tiling)
    return decoding + views * h * w * FLOAT_RGB


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
