"""Views -> model batch: one downscale, six resizes, one float copy.

Images arrive as uint8 BGR (OpenCV's order); the model takes float32 RGB
0..255 NHWC, so the channel flip happens once, in the copy into the batch.
"""

from __future__ import annotations

import cv2
import numpy as np

from .tiling import View


def render_views(bgr: np.ndarray, views: list[View], input_size: tuple[int, int],
                 out: np.ndarray | None = None) -> np.ndarray:
    """Crop and resize each view to `input_size` (h, w) into `out` (views, h, w, 3) uint8.

    When even the smallest view is more than twice the input, the image is
    first downscaled once (INTER_AREA) so that each view resize is small.
    Downscaling uses INTER_AREA (no aliasing), upscaling bicubic (as in training).
    """
    in_h, in_w = input_size
    if out is None:
        out = np.empty((len(views), in_h, in_w, 3), np.uint8)
    scale = max(in_w / min(v.width for v in views), in_h / min(v.height for v in views))
    if scale < 0.5:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        sy, sx = bgr.shape[0], bgr.shape[1]
        views = [_clip(v.scaled(scale, scale), sx, sy) for v in views]
    for i, v in enumerate(views):
        crop = bgr[v.y0:v.y1, v.x0:v.x1]
        shrink = crop.shape[1] >= in_w and crop.shape[0] >= in_h
        cv2.resize(crop, (in_w, in_h), dst=out[i],
                   interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return out


def _clip(v: View, width: int, height: int) -> View:
    x1, y1 = min(max(v.x1, v.x0 + 1), width), min(max(v.y1, v.y0 + 1), height)
    return View(v.name, min(v.x0, x1 - 1), min(v.y0, y1 - 1), x1, y1)


class BatchBuffer:
    """A preallocated float32 RGB batch, filled from uint8 BGR views."""

    def __init__(self, capacity: int, input_size: tuple[int, int]):
        self.array = np.zeros((capacity, *input_size, 3), np.float32)
        self.size = 0

    def add(self, views_bgr: np.ndarray) -> slice:
        """Append views; return their rows in the batch."""
        n = len(views_bgr)
        if self.size + n > len(self.array):  # grow rarely, never shrink
            grown = np.zeros((max(2 * len(self.array), self.size + n), *self.array.shape[1:]), np.float32)
            grown[: self.size] = self.array[: self.size]
            self.array = grown
        rows = slice(self.size, self.size + n)
        n_, h, w, _ = views_bgr.shape
        rgb = cv2.cvtColor(views_bgr.reshape(n_ * h, w, 3), cv2.COLOR_BGR2RGB)  # 10x a strided flip
        np.copyto(self.array[rows], rgb.reshape(views_bgr.shape), casting="unsafe")
        self.size += n
        return rows

    def batch(self) -> np.ndarray:
        """The filled part of the batch (a view, no copy)."""
        return self.array[: self.size]

    def clear(self) -> None:
        self.size = 0
