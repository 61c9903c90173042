"""Views -> model batch: one downscale, six resizes, one float conversion.

Images arrive as uint8 BGR (OpenCV's order); the model takes float32 RGB
0..255 NHWC, so the channel flip happens once, on the small rendered views,
with the float conversion (`model_input`), where the views are rendered (in a
scan: in the decode threads, off the thread that runs the model). Where and how
to cut the views is worked out once per image size.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np

from .tiling import View

SHRINK_AREA = 3.0  # a resize that shrinks by at least this much uses INTER_AREA, by less: bilinear


def render_views(bgr: np.ndarray, views: Sequence[View], input_size: tuple[int, int],
                 out: np.ndarray | None = None) -> np.ndarray:
    """Crop and resize each view to `input_size` (h, w) into `out` (views, h, w, 3) uint8.

    When even the smallest view is more than twice the input, the image is
    first downscaled once (INTER_AREA) so that each view resize is small. A view
    at least k >= 2 times the input on both axes is box-averaged by exactly k
    (OpenCV's fast integer INTER_AREA; the crop loses < k edge pixels), then
    resized bilinearly; a shrink under 2x is bilinear directly. INTER_AREA at
    fractional ratios costs 6-7x as much (0.35-0.65 ms a view at 128 px) and is
    kept only for the rare view that still shrinks by SHRINK_AREA or more on one
    axis. Upscaling is bicubic (as in training).
    """
    in_h, in_w = input_size
    if out is None:
        out = np.empty((len(views), in_h, in_w, 3), np.uint8)
    views = tuple(views)
    scale = _downscale(views, input_size)
    if scale is not None:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    for i, (rows, cols, k, interpolation) in enumerate(_plan(*bgr.shape[:2], views, input_size, scale)):
        crop = bgr[rows, cols]
        if k > 1:
            crop = cv2.resize(crop, (crop.shape[1] // k, crop.shape[0] // k), interpolation=cv2.INTER_AREA)
        cv2.resize(crop, (in_w, in_h), dst=out[i], interpolation=interpolation)
    return out


@functools.lru_cache(maxsize=256)
def _downscale(views: tuple[View, ...], input_size: tuple[int, int]) -> float | None:
    """The factor for one downscale before the view resizes, or None when not worth it."""
    in_h, in_w = input_size
    scale = max(in_w / min(v.width for v in views), in_h / min(v.height for v in views))
    return scale if scale < 0.5 else None


@functools.lru_cache(maxsize=256)
def _plan(height: int, width: int, views: tuple[View, ...], input_size: tuple[int, int],
          scale: float | None) -> tuple[tuple[slice, slice, int, int], ...]:
    """Each view's rows, columns, box factor k and final interpolation in an image of this size
    (computed once per size: a stream's frames share it), the views first scaled by `scale`
    when it is not None."""
    in_h, in_w = input_size
    if scale is not None:
        views = tuple(_clip(v.scaled(scale, scale), width, height) for v in views)
    plan = []
    for v in views:
        rows, cols = slice(v.y0, v.y1), slice(v.x0, v.x1)
        w, h = len(range(width)[cols]), len(range(height)[rows])  # the crop's size
        k = max(1, min(w // in_w, h // in_h))
        if k > 1:  # trim to whole k x k boxes
            rows, cols = slice(v.y0, v.y0 + h - h % k), slice(v.x0, v.x0 + w - w % k)
            w, h = w // k, h // k
        if w < in_w or h < in_h:
            interpolation = cv2.INTER_CUBIC
        else:
            interpolation = cv2.INTER_AREA if max(w / in_w, h / in_h) >= SHRINK_AREA else cv2.INTER_LINEAR
        plan.append((rows, cols, k, interpolation))
    return tuple(plan)


def _clip(v: View, width: int, height: int) -> View:
    x1, y1 = min(max(v.x1, v.x0 + 1), width), min(max(v.y1, v.y0 + 1), height)
    return View(v.name, min(v.x0, x1 - 1), min(v.y0, y1 - 1), x1, y1)


def model_input(views_bgr: np.ndarray) -> np.ndarray:
    """Rendered uint8 BGR views (views, h, w, 3) -> a new float32 RGB 0..255 array for the model."""
    n, h, w, _ = views_bgr.shape
    rgb = cv2.cvtColor(views_bgr.reshape(n * h, w, 3), cv2.COLOR_BGR2RGB)  # 10x a strided flip
    return rgb.reshape(views_bgr.shape).astype(np.float32)


class BatchBuffer:
    """A preallocated float32 batch that packs several images' views for one model call."""

    def __init__(self, capacity: int, input_size: tuple[int, int]):
        self.array = np.empty((capacity, *input_size, 3), np.float32)

    def pack(self, parts: list[np.ndarray]) -> np.ndarray:
        """`parts` one after another in one array: the part itself when there is only one
        (no copy), else the front of the buffer (grown rarely, never shrunk)."""
        if len(parts) == 1:
            return parts[0]
        n = sum(len(p) for p in parts)
        if n > len(self.array):
            self.array = np.empty((max(2 * len(self.array), n), *self.array.shape[1:]), np.float32)
        # Copied through memoryviews, which keep the GIL: numpy lets it go for a copy this size, and the
        # thread that runs the model then waits (up to milliseconds) to get it back from a decode thread.
        dst, offset = memoryview(self.array).cast("B"), 0
        for p in parts:
            if p.shape[1:] != self.array.shape[1:]:
                raise ValueError(f"views of shape {p.shape[1:]} in a batch of {self.array.shape[1:]}")
            src = memoryview(np.ascontiguousarray(p, dtype=np.float32)).cast("B")
            dst[offset:offset + src.nbytes] = src
            offset += src.nbytes
        return self.array[:n]
