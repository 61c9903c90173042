"""The dual engine: Standard for thumbnails, HD for real photos, loaded lazily.

`Engine.classify` takes decoded images and returns one `Verdict` per image;
preparing the views (`Engine.prepare`) is separate so that a scan can do it in
worker threads while the main thread runs the model.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .decode import Decoded
from .merge import Decision, decide_image, resolve_thresholds
from .model import Model, model_file, open_model
from .preprocess import BatchBuffer, model_input, render_views
from .tiling import View, view_boxes

ENGINES = ("auto", "standard", "hd")
THUMBNAIL_MAX_SIDE = 64  # short side <= this: a CIFAR-like thumbnail -> Standard
DEFAULT_MODELS = Path(__file__).resolve().parent.parent / "models"


def route(width: int, height: int, engine: str = "auto") -> str:
    """The role that should see an image: `engine`, or by context when 'auto'."""
    if engine != "auto":
        return engine
    return "standard" if min(width, height) <= THUMBNAIL_MAX_SIDE else "hd"


@functools.lru_cache(maxsize=256)
def _views(width: int, height: int, fraction: float, tiling: bool) -> tuple[tuple[View, ...], tuple[str, ...]]:
    """`view_boxes` and the views' names, computed once per image size (frames of a stream share them)."""
    views = tuple(view_boxes(width, height, fraction, tiling))
    return views, tuple(v.name for v in views)


@dataclass
class Prepared:
    """An image's views, rendered for its engine, waiting for inference."""

    role: str
    width: int
    height: int
    views: list[View]
    pixels: np.ndarray  # (views, h, w, 3) float32 RGB 0..255: the model's input
    view_names: tuple[str, ...]  # cached per image size with `views`, not rebuilt per frame
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class Verdict:
    """One image's result: the decision plus how it was reached."""

    decision: Decision
    role: str
    provider: str
    precision: str
    tiling: bool
    thresholds: dict[str, float]
    views: list[View]
    timings_ms: dict[str, float]


class Engine:
    """Standard and HD models behind one call; each opened on first use."""

    def __init__(self, models_dir: Path | str = DEFAULT_MODELS, engine: str = "auto",
                 device: str = "auto", precision: str = "auto", threads: int = 0,
                 tiling: bool = True, threshold: float | None = None):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}")
        self.models_dir, self.engine, self.device = Path(models_dir), engine, device
        self.precision, self.threads = precision, threads
        self.tiling, self.threshold = tiling, threshold
        self._models: dict[str, Model] = {}
        self._lock = threading.Lock()
        self._buffers: dict[str, BatchBuffer] = {}
        self._threshold_cache: dict[tuple[str, float | None], tuple[np.ndarray, dict[str, float]]] = {}

    def model(self, role: str) -> Model:
        """The model for a role, opened once (thread-safe)."""
        with self._lock:
            if role not in self._models:
                path = model_file(self.models_dir, role, self.device, self.precision)
                m = open_model(path, self.device, self.threads)
                if self.precision == "auto" and m.provider == "cpu" and m.meta.precision == "fp16":
                    # a GPU provider was listed but did not start: FP16 on a CPU is only slower
                    m = open_model(model_file(self.models_dir, role, "cpu"), "cpu", self.threads)
                if m.meta.role != role:
                    raise ValueError(f"{path}: metadata says role {m.meta.role!r}, expected {role!r}")
                self._models[role] = m
            return self._models[role]

    def prepare(self, decoded: Decoded, timings_ms: dict[str, float] | None = None,
                role: str | None = None) -> Prepared:
        """Route an image (or send it to `role`) and render its views for that model."""
        t0 = time.perf_counter()
        role = role or route(decoded.width, decoded.height, self.engine)
        meta = self.model(role).meta
        h, w = decoded.bgr.shape[:2]
        views, names = _views(w, h, meta.view_fraction, self.tiling)
        pixels = model_input(render_views(decoded.bgr, views, meta.input_size))
        timings = dict(timings_ms or {})
        timings["preprocess"] = (time.perf_counter() - t0) * 1e3
        return Prepared(role, decoded.width, decoded.height, list(views), pixels, names, timings)

    def view_scores(self, items: list[Prepared]) -> tuple[list[np.ndarray], list[float]]:
        """Raw per-view scores (views, classes) for each item, one model call per role,
        and each item's share of its call's inference time in ms."""
        scores: list[np.ndarray] = [np.empty(0)] * len(items)
        infer_ms = [0.0] * len(items)
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(items):
            groups.setdefault(p.role, []).append(i)
        for role in sorted(groups):
            idx = groups[role]
            model = self.model(role)
            if role not in self._buffers:
                self._buffers[role] = BatchBuffer(6 * len(idx), model.meta.input_size)
            batch = self._buffers[role].pack([items[i].pixels for i in idx])
            t0 = time.perf_counter()
            out = model(batch)
            ms = (time.perf_counter() - t0) * 1e3 / len(idx)
            start = 0
            for i in idx:
                n = len(items[i].pixels)
                scores[i], infer_ms[i] = out[start:start + n], ms
                start += n
        return scores, infer_ms

    def classify(self, items: list[Prepared]) -> list[Verdict]:
        """Run prepared images (any mix of roles) and decide each one's labels."""
        all_scores, infer_ms = self.view_scores(items)
        verdicts = []
        for p, scores, ms in zip(items, all_scores, infer_ms, strict=True):
            t1 = time.perf_counter()
            model = self.model(p.role)
            meta = model.meta
            thresholds, named = self._thresholds(p.role)
            decision = decide_image(scores, meta.classes, p.view_names, thresholds, meta.fallback_min_score)
            timings = {**p.timings_ms, "infer": ms, "postprocess": (time.perf_counter() - t1) * 1e3}
            verdicts.append(Verdict(decision, p.role, model.provider, meta.precision, self.tiling,
                                    dict(named), p.views, timings))
        return verdicts

    def _thresholds(self, role: str) -> tuple[np.ndarray, dict[str, float]]:
        """A role's thresholds (with the --threshold override) as a vector and by name, cached."""
        key = (role, self.threshold)
        if key not in self._threshold_cache:
            meta = self.model(role).meta
            vec = resolve_thresholds(meta.threshold_vector(), self.threshold)
            self._threshold_cache[key] = (vec, {c: round(float(t), 6) for c, t in zip(meta.classes, vec, strict=True)})
        return self._threshold_cache[key]

    def classify_image(self, decoded: Decoded) -> Verdict:
        """Convenience: prepare and classify one image."""
        return self.classify([self.prepare(decoded)])[0]
