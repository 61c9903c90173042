"""Six-view geometry: pure functions, no I/O (as SAHI keeps its slicing).

A view is (name, x0, y0, x1, y1) in pixels, half-open: x0 <= x < x1.
"""

from __future__ import annotations

from typing import NamedTuple

VIEW_NAMES = ("whole", "top_left", "top_right", "bottom_left", "bottom_right", "centre")


def view_count(tiling: bool = True) -> int:
    """How many views an image gets: all of VIEW_NAMES with tiling, the whole image alone without."""
    return len(VIEW_NAMES) if tiling else 1


class View(NamedTuple):
    """One view of an image: a named box in pixel coordinates."""

    name: str
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def scaled(self, sx: float, sy: float) -> View:
        """The same view in an image scaled by (sx, sy)."""
        return View(self.name, round(self.x0 * sx), round(self.y0 * sy),
                    round(self.x1 * sx), round(self.y1 * sy))


def view_boxes(width: int, height: int, fraction: float = 0.60, tiling: bool = True) -> list[View]:
    """The whole image, then (with tiling) four corners and the centre, each
    `fraction` of the image's width and height (at least one pixel)."""
    if width < 1 or height < 1:
        raise ValueError(f"image has no pixels: {width}x{height}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"view fraction must be in (0, 1], got {fraction}")
    views = [View("whole", 0, 0, width, height)]
    if not tiling:
        return views
    vw = max(1, min(width, round(width * fraction)))
    vh = max(1, min(height, round(height * fraction)))
    cx, cy = (width - vw) // 2, (height - vh) // 2
    corners = ((0, 0), (width - vw, 0), (0, height - vh), (width - vw, height - vh), (cx, cy))
    for name, (x0, y0) in zip(VIEW_NAMES[1:], corners, strict=True):
        views.append(View(name, x0, y0, x0 + vw, y0 + vh))
    return views
