"""Drawing results on a frame: the winning views, the labels, a layout legend and a status line.

Shared by `scan --annotate`, the camera window, `--record` and snapshots. Works in place on BGR
images. Every text is drawn ONCE, on a filled box measured with the same font, scale and thickness
(OpenCV 5 draws a thicker Hershey text with a bold font of other widths, so an outline made of a
thicker copy no longer lines up with the text), and sizes follow the frame (`Style.for_frame`), so
the overlay reads the same on OpenCV 4.x and 5.x, from 320x240 to 4K.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .engine import Verdict
from .tiling import View

FONT = cv2.FONT_HERSHEY_SIMPLEX
PALETTE = [(48, 130, 245), (75, 180, 60), (200, 130, 0), (180, 30, 145), (0, 200, 200),
           (60, 60, 230), (240, 160, 70), (40, 110, 40), (160, 160, 0), (120, 80, 200)]
MUTED = (170, 170, 170)  # the guess's swatch and bar
MUTED_TEXT = (200, 200, 200)  # the guess
PANEL = (32, 32, 32)  # background of texts
FAINT = (210, 210, 210)  # views that won nothing (shown with `all_views`)
WHITE = (255, 255, 255)
Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def class_colour(i: int) -> tuple[int, int, int]:
    """A stable colour per class index."""
    return PALETTE[i % len(PALETTE)]


@dataclass(frozen=True)
class Style:
    """Font and line sizes for a frame: `scale` follows the frame's short side (at least 0.4, legible
    at 320x240); `thick` is 1 below scale 0.8 (thicker strokes blot small Hershey text on 4.x)."""

    scale: float
    thick: int
    pad: int  # text to its box's edge
    margin: int  # boxes to the frame's edge
    line: int  # outline of a winning view

    @classmethod
    def for_frame(cls, width: int, height: int) -> Style:
        scale = max(0.4, min(width, height) / 850)
        thick = 1 if scale < 0.8 else round(1.5 * scale)
        pad = max(2, round(5 * scale))
        return cls(scale, thick, pad, pad + 1, max(2, round(3.5 * scale)))

    def size(self, text: str, scale: float = 1.0) -> tuple[int, int]:
        """The box a text is drawn in: (width, height), padding included."""
        (tw, th), base = cv2.getTextSize(text, FONT, self.scale * scale, self.thick)
        return tw + 2 * self.pad, th + base + 2 * self.pad


def put_text(img: np.ndarray, text: str, x: int, y: int, style: Style, fg: tuple[int, int, int] = WHITE,
             bg: tuple[int, int, int] | None = PANEL, scale: float = 1.0, opacity: float = 0.8) -> Rect:
    """Draw `text` once on a box whose top-left is (x, y), moved inside the frame; returns the box."""
    h, w = img.shape[:2]
    (tw, th), base = cv2.getTextSize(text, FONT, style.scale * scale, style.thick)
    bw, bh = tw + 2 * style.pad, th + base + 2 * style.pad
    x, y = max(0, min(x, w - bw)), max(0, min(y, h - bh))
    if bg is not None:
        fill(img, (x, y, x + bw, y + bh), bg, opacity)
    cv2.putText(img, text, (x + style.pad, y + style.pad + th), FONT, style.scale * scale, fg, style.thick,
                cv2.LINE_AA)
    return x, y, min(w, x + bw), min(h, y + bh)


def fill(img: np.ndarray, rect: Rect, colour: tuple[int, int, int], opacity: float = 1.0) -> None:
    """Fill a rectangle (clipped to the frame), blended over the frame below 1.0."""
    x0, y0, x1, y1 = max(0, rect[0]), max(0, rect[1]), min(img.shape[1], rect[2]), min(img.shape[0], rect[3])
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    if opacity >= 1.0:
        roi[:] = colour
    else:
        roi[:] = (roi * (1.0 - opacity) + np.array(colour, np.float32) * opacity).astype(np.uint8)


def text_colour(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on a BGR background."""
    b, g, r = bg
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else WHITE


def view_label(name: str) -> str:
    """A view's name as shown: `top_left` -> `top left`."""
    return name.replace("_", " ")


def draw_verdict(img: np.ndarray, verdict: Verdict, status: str | None = None, all_views: bool = False) -> np.ndarray:
    """Draw the verdict: each confident label's winning view outlined in the label's colour and tagged
    with the view's name, the labels with their scores and views (top left), a legend of the view
    layout (bottom right) and the status line (bottom). The guess is drawn as `dog? 0.25` (muted, no
    winning box), an image with neither as `none of: ...`. `all_views` adds the other views, faint."""
    h, w = img.shape[:2]
    st = Style.for_frame(w, h)
    d = verdict.decision
    classes = list(d.scores)
    sx, sy = w / max(v.x1 for v in verdict.views), h / max(v.y1 for v in verdict.views)
    boxes = {v.name: v.scaled(sx, sy) for v in verdict.views}
    guess = d.guess[0] if d.guess else None
    confident = [c for c in d.labels if c != guess]  # with --guess-in-labels the guess is in labels too
    winners: dict[str, list[str]] = {}
    for c in confident:
        winners.setdefault(d.views[c], []).append(c)
    colour = {c: class_colour(classes.index(c)) for c in classes}

    if all_views:
        faint = img.copy()
        for name, v in boxes.items():
            if name not in winners:
                cv2.rectangle(faint, (v.x0, v.y0), (v.x1 - 1, v.y1 - 1), FAINT, max(1, st.line // 2))
        cv2.addWeighted(faint, 0.6, img, 0.4, 0, dst=img)
    for name, labels in winners.items():
        v = boxes[name]
        for k, c in enumerate(labels):  # a view that won several labels: nested outlines
            i = k * st.line + st.line // 2
            cv2.rectangle(img, (v.x0 + i, v.y0 + i), (v.x1 - 1 - i, v.y1 - 1 - i), colour[c], st.line)

    taken: list[Rect] = []
    bottom = h - st.margin
    if status:
        for line in reversed(wrap(status, w - 2 * st.margin, st)):
            bottom = _bottom_text(img, line, bottom, st, taken)
    taken.append(draw_legend(img, list(boxes.values()), {n: colour[c[0]] for n, c in winners.items()},
                             w - st.margin, bottom, st))
    rows = [(f"{c} {d.scores[c]:.2f} ({view_label(d.views[c])})", colour[c], d.scores[c], WHITE)
            for c in confident]
    if not rows and d.guess:
        rows = [(f"{d.guess[0]}? {d.guess[1]:.2f}", MUTED, d.guess[1], MUTED_TEXT)]
    if not rows:
        rows = [(none_of(classes, w - 2 * st.margin, st), None, 0.0, WHITE)]
    _panel(img, rows, bottom, st, taken)
    for name, labels in winners.items():
        v, c = boxes[name], colour[labels[0]]
        _tag(img, view_label(name), v, st, c, text_colour(c), taken)
    if all_views:
        for name, v in boxes.items():
            if name not in winners:
                _tag(img, view_label(name), v, st, PANEL, FAINT, taken, scale=0.8, opacity=0.55)
    return img


def _bottom_text(img: np.ndarray, text: str, bottom: int, st: Style, taken: list[Rect]) -> int:
    bh = st.size(text)[1]
    taken.append(put_text(img, text, st.margin, bottom - bh, st))
    return bottom - bh


def _panel(img: np.ndarray, rows: list[tuple[str, tuple[int, int, int] | None, float, tuple[int, int, int]]],
           bottom: int, st: Style, taken: list[Rect]) -> None:
    """The rows top left: a colour swatch, the text, a score bar along the text's box."""
    y, x0 = st.margin, st.margin
    row_h = st.size("Ag")[1]
    fit = max(1, (bottom - y) // (row_h + 1))
    if len(rows) > fit:
        rows = rows[:fit - 1] + [(f"+{len(rows) - fit + 1} more", None, 0.0, WHITE)]
    for text, swatch, score, fg in rows:
        x = x0
        if swatch is not None:
            fill(img, (x, y, x + row_h, y + row_h), swatch)
            x += row_h
        r = put_text(img, text, x, y, st, fg)
        if swatch is not None:
            bar = max(2, st.pad // 2)
            length = round((r[2] - r[0]) * min(max(score, 0.0), 1.0)) if score == score else 0
            fill(img, (r[0], r[3] - bar, r[0] + length, r[3]), swatch)
        taken.append((x0, r[1], r[2], r[3]))
        y = r[3] + 1


def _tag(img: np.ndarray, text: str, v: View, st: Style, bg: tuple[int, int, int], fg: tuple[int, int, int],
         taken: list[Rect], scale: float = 1.0, opacity: float = 1.0) -> None:
    """A view's name inside one of its corners: the first corner free of other texts (else the least covered)."""
    bw, bh = st.size(text, scale)
    i = st.line
    spots = [(v.x0 + i, v.y0 + i), (v.x1 - i - bw, v.y0 + i), (v.x0 + i, v.y1 - i - bh), (v.x1 - i - bw, v.y1 - i - bh)]
    h, w = img.shape[:2]
    spots = [(max(0, min(x, w - bw)), max(0, min(y, h - bh))) for x, y in spots]
    x, y = min(spots, key=lambda p: sum(_overlap((p[0], p[1], p[0] + bw, p[1] + bh), r) for r in taken))
    taken.append(put_text(img, text, x, y, st, fg, bg, scale, opacity))


def _overlap(a: Rect, b: Rect) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def draw_legend(img: np.ndarray, views: list[View], won: dict[str, tuple[int, int, int]], right: int, bottom: int,
                st: Style) -> Rect:
    """A small map of the view layout with its bottom-right corner at (right, bottom): every view a thin
    outline, the winning views filled in their label's colour. Returns its box."""
    h, w = img.shape[:2]
    fw, fh = max(v.x1 for v in views), max(v.y1 for v in views)
    mw = max(48, min(400, round(0.14 * w)))
    mh = max(12, round(mw * fh / fw))
    p = max(2, st.pad // 2)
    box = (right - mw - 2 * p, bottom - mh - 2 * p, right, bottom)
    fill(img, box, PANEL, 0.8)
    x0, y0 = box[0] + p, box[1] + p

    def at(v: View) -> tuple[tuple[int, int], tuple[int, int]]:
        return ((x0 + round(v.x0 * mw / fw), y0 + round(v.y0 * mh / fh)),
                (x0 + round(v.x1 * mw / fw) - 1, y0 + round(v.y1 * mh / fh) - 1))

    for v in views:
        if v.name in won:
            a, b = at(v)
            fill(img, (a[0], a[1], b[0] + 1, b[1] + 1), won[v.name], 0.45)
    for v in views:
        cv2.rectangle(img, *at(v), (120, 120, 120), 1)
    for v in views:
        if v.name in won:
            cv2.rectangle(img, *at(v), won[v.name], max(1, st.line // 2))
    return box


def wrap(text: str, width: int, st: Style, sep: str = " | ") -> list[str]:
    """Split a status line at `sep` into lines whose boxes fit `width` px (a part wider than that stays whole)."""
    lines: list[str] = []
    for part in text.split(sep):
        if lines and st.size(lines[-1] + sep + part)[0] <= width:
            lines[-1] += sep + part
        else:
            lines.append(part)
    return lines


def none_of(classes: list[str], width: int, st: Style) -> str:
    """`none of: a, b, c` shortened to `none of: a, b, ...` where its box would be wider than `width` px."""
    texts = ["none of: " + ", ".join(classes[:n]) + (", ..." if n < len(classes) else "")
             for n in range(len(classes), 0, -1)]
    return next((t for t in texts if st.size(t)[0] <= width), "none of the classes")


def draw_banner(img: np.ndarray, text: str) -> np.ndarray:
    """A large centred notice (e.g. PAUSED) over a dark band."""
    h, w = img.shape[:2]
    st = Style.for_frame(w, h)
    scale = 1.6 if st.size(text, 1.6)[0] <= w else 1.0
    bw, bh = st.size(text, scale)
    fill(img, (0, (h - bh) // 2 - st.pad, w, (h + bh) // 2 + st.pad), PANEL, 0.85)
    put_text(img, text, (w - bw) // 2, (h - bh) // 2, st, bg=None, scale=scale)
    return img


def status_text(routing: str, verdict: Verdict, cam_fps: float, inf_fps: float, latency_ms: float,
                smooth: int = 1) -> str:
    """The camera's status line: engine (routing as chosen > role as routed), provider, precision, rates, latency."""
    name = verdict.role if routing == verdict.role else f"{routing}>{verdict.role}"
    extra = f" | smooth {smooth}" if smooth > 1 else ""
    return (f"{name} {verdict.provider} {verdict.precision} | tiling {'on' if verdict.tiling else 'off'}{extra}"
            f" | cam {cam_fps:.1f} fps | inf {inf_fps:.1f} fps | {latency_ms:.0f} ms")
