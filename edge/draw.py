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


def class_colour(i: int) -> tuple[int, int, int]:
    """A stable colour per class index."""
    return PALETTE[i % len(PALETTE)]


def draw_verdict(img: np.ndarray, verdict: Verdict, status: str | None = None) -> np.ndarray:
    """Draw the views (winners bold, in their label's colour), labels and scores."""
    h, w = img.shape[:2]
    sx, sy = w / max(v.x1 for v in verdict.views), h / max(v.y1 for v in verdict.views)
    classes = list(verdict.decision.scores)
    unit = max(1, round(min(w, h) / 400))
    winners = {verdict.decision.views[c]: c for c in reversed(verdict.decision.labels)}
    for v in verdict.views:
        x0, y0, x1, y1 = round(v.x0 * sx), round(v.y0 * sy), round(v.x1 * sx) - 1, round(v.y1 * sy) - 1
        if v.name in winners:
            colour = class_colour(classes.index(winners[v.name]))
            cv2.rectangle(img, (x0, y0), (x1, y1), colour, 2 * unit + 1)
        else:
            cv2.rectangle(img, (x0, y0), (x1, y1), (170, 170, 170), unit)
    rows = sorted(verdict.decision.scores.items(), key=lambda kv: -kv[1])
    rows = [r for r in rows if r[0] in verdict.decision.labels] or rows[:1]
    scale, line = 0.5 * unit, 22 * unit
    for k, (name, score) in enumerate(rows):
        y = 6 * unit + k * line
        bar = round(120 * unit * score)
        colour = class_colour(classes.index(name))
        cv2.rectangle(img, (6 * unit, y), (6 * unit + 120 * unit, y + line - 4 * unit), (40, 40, 40), -1)
        cv2.rectangle(img, (6 * unit, y), (6 * unit + bar, y + line - 4 * unit), colour, -1)
        mark = "" if name in verdict.decision.labels else "?"
        _text(img, f"{name}{mark} {score:.2f}", (10 * unit, y + line - 9 * unit), scale, unit)
    if status:
        _text(img, status, (6 * unit, h - 8 * unit), scale, unit)
    return img


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, unit: int) -> None:
    cv2.putText(img, text, org, FONT, scale, (0, 0, 0), 3 * unit, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, (255, 255, 255), unit, cv2.LINE_AA)


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
