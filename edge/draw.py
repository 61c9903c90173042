"""Drawing results on a frame: view rectangles, labels with score bars, a status line.

Shared by `scan --annotate` and the camera window. Works in place on BGR images.
"""

from __future__ import annotations

import cv2
import numpy as np

from .engine import Verdict

FONT = cv2.FONT_HERSHEY_SIMPLEX
PALETTE = [(48, 130, 245), (75, 180, 60), (200, 130, 0), (180, 30, 145), (0, 200, 200),
           (60, 60, 230), (240, 160, 70), (40, 110, 40), (160, 160, 0), (120, 80, 200)]
MUTED = (170, 170, 170)  # views that won nothing, the guess's bar
MUTED_TEXT = (200, 200, 200)  # the guess and "none of: ..."


def class_colour(i: int) -> tuple[int, int, int]:
    """A stable colour per class index."""
    return PALETTE[i % len(PALETTE)]


def draw_verdict(img: np.ndarray, verdict: Verdict, status: str | None = None) -> np.ndarray:
    """Draw the views (the confident labels' winners bold, in their label's colour), the confident
    labels with score bars, or the guess (`dog? 0.25`, muted, no winning box), or `none of: ...`."""
    h, w = img.shape[:2]
    d = verdict.decision
    sx, sy = w / max(v.x1 for v in verdict.views), h / max(v.y1 for v in verdict.views)
    classes = list(d.scores)
    unit = max(1, round(min(w, h) / 400))
    guess = d.guess[0] if d.guess else None
    confident = [c for c in d.labels if c != guess]  # with --guess-in-labels the guess is in labels too
    winners = {d.views[c]: c for c in reversed(confident)}
    for v in verdict.views:
        x0, y0, x1, y1 = round(v.x0 * sx), round(v.y0 * sy), round(v.x1 * sx) - 1, round(v.y1 * sy) - 1
        if v.name in winners:
            colour = class_colour(classes.index(winners[v.name]))
            cv2.rectangle(img, (x0, y0), (x1, y1), colour, 2 * unit + 1)
        else:
            cv2.rectangle(img, (x0, y0), (x1, y1), MUTED, unit)
    rows = [(c, d.scores[c], class_colour(classes.index(c)), "") for c in confident]
    if not rows and d.guess:
        rows = [(d.guess[0], d.guess[1], MUTED, "?")]
    scale, line = 0.5 * unit, 22 * unit
    for k, (name, score, colour, mark) in enumerate(rows):
        y = 6 * unit + k * line
        bar = round(120 * unit * min(max(score, 0.0), 1.0)) if score == score else 0
        cv2.rectangle(img, (6 * unit, y), (6 * unit + 120 * unit, y + line - 4 * unit), (40, 40, 40), -1)
        cv2.rectangle(img, (6 * unit, y), (6 * unit + bar, y + line - 4 * unit), colour, -1)
        _text(img, f"{name}{mark} {score:.2f}", (10 * unit, y + line - 9 * unit), scale, unit,
              (255, 255, 255) if not mark else MUTED_TEXT)
    if not rows:
        _text(img, none_of(classes, w - 12 * unit, scale, unit), (6 * unit, 6 * unit + line - 9 * unit), scale,
              unit, MUTED_TEXT)
    if status:
        _text(img, status, (6 * unit, h - 8 * unit), scale, unit)
    return img


def none_of(classes: list[str], width: int, scale: float, unit: int) -> str:
    """`none of: a, b, c` shortened to `none of: a, b, ...` where it would be wider than `width` px
    (measured as drawn: with the outline, which some OpenCV versions draw wider)."""
    texts = ["none of: " + ", ".join(classes[:n]) + (", ..." if n < len(classes) else "")
             for n in range(len(classes), 0, -1)]
    return next((t for t in texts if cv2.getTextSize(t, FONT, scale, 3 * unit)[0][0] <= width), "none of the classes")


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, unit: int,
          colour: tuple[int, int, int] = (255, 255, 255)) -> None:
    cv2.putText(img, text, org, FONT, scale, (0, 0, 0), 3 * unit, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, colour, unit, cv2.LINE_AA)


def draw_banner(img: np.ndarray, text: str) -> np.ndarray:
    """A large centred notice (e.g. PAUSED) over a dark band."""
    h, w = img.shape[:2]
    unit = max(1, round(min(w, h) / 400))
    scale = 1.0 * unit
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 2 * unit)
    y = h // 2
    cv2.rectangle(img, (0, y - th - 8 * unit), (w, y + base + 8 * unit), (30, 30, 30), -1)
    cv2.putText(img, text, ((w - tw) // 2, y), FONT, scale, (255, 255, 255), 2 * unit, cv2.LINE_AA)
    return img


def status_text(routing: str, verdict: Verdict, cam_fps: float, inf_fps: float, latency_ms: float,
                smooth: int = 1) -> str:
    """The camera's status line: engine (routing as chosen > role as routed), provider, precision, rates, latency."""
    name = verdict.role if routing == verdict.role else f"{routing}>{verdict.role}"
    extra = f" | smooth {smooth}" if smooth > 1 else ""
    return (f"{name} {verdict.provider} {verdict.precision} | tiling {'on' if verdict.tiling else 'off'}{extra}"
            f" | cam {cam_fps:.1f} fps | inf {inf_fps:.1f} fps | {latency_ms:.0f} ms")
