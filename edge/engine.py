"""The dual engine and the one per-frame path: decode -> route -> views -> infer -> merge -> decide.

Standard sees thumbnails, HD real photos; each model is opened on first use.
Every caller (scan, camera, eval, benchmarks) goes through these calls:

- `Engine.load(data)`: `Engine.decode` (JPEGs at a reduced size chosen for the
  model the image routes to), then render its views: a `Prepared` item;
- `Engine.prepare(decoded)`: the same for pixels already decoded (camera frames);
- `Engine.classify(items)`: one model call per role, the model's merge (`meta.merge`: max by default), an optional
  per-stream score hook, the decision (labels, guess, presence): one `Verdict` per item.

Loading is separate from classifying so that a scan can load in worker threads
while the main thread runs the model. An image is routed once, in `load` or
`prepare`; its `Prepared` item carries the role and the tiling it was rendered
with, so per-call settings (a camera's keys) never change the engine itself.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import MAX_PIXELS
from .decode import Decoded, decode
from .merge import Decision, ScoreHook, decide_image, resolve_thresholds
from .metadata import ROLES, MetadataError
from .model import Model, open_role
from .preprocess import BatchBuffer, model_input, render_views
from .tiling import View, view_boxes, view_count

ROUTINGS = ("auto", *ROLES)
THUMBNAIL_MAX_SIDE = 64  # short side <= this: a CIFAR-like thumbnail -> Standard
DEFAULT_MODELS = Path(__file__).resolve().parent.parent / "models"


def route(width: int, height: int, routing: str = "auto") -> str:
    """The role that should see an image: `routing` itself, or by context when 'auto'."""
    if routing != "auto":
        return routing
    return "standard" if min(width, height) <= THUMBNAIL_MAX_SIDE else "hd"


@functools.lru_cache(maxsize=256)
def _views(width: int, height: int, fraction: float, tiling: bool) -> tuple[tuple[View, ...], tuple[str, ...]]:
    """`view_boxes` and the views' names, computed once per image size (frames of a stream share them)."""
    views = tuple(view_boxes(width, height, fraction, tiling))
    return views, tuple(v.name for v in views)


@dataclass
class Prepared:
    """An image routed and rendered for its model, waiting for inference."""

    role: str
    tiling: bool
    width: int  # the image's own (upright) size, whatever size it was decoded at
    height: int
    views: tuple[View, ...]
    view_names: tuple[str, ...]
    pixels: np.ndarray  # (views, h, w, 3) float32 RGB 0..255: the model's input
    timings_ms: dict[str, float]
    decoded: Decoded | None = None  # kept only when asked for (to draw on it)


@dataclass
class Verdict:
    """One image's result: the decision plus everything its record says about how it was reached."""

    decision: Decision
    role: str
    provider: str
    precision: str
    tiling: bool
    width: int
    height: int
    thresholds: dict[str, float]
    fallback_min: float  # when nothing passes, the top class is the guess if it scores above this
    presence_threshold: float  # presence below this: none of the classes (the model's metadata)
    guess_in_labels: bool  # the reference system's rule: the guess is also put in labels
    views: tuple[View, ...]
    timings_ms: dict[str, float]


class Engine:
    """Standard and HD models behind one per-frame path; each opened on first use.

    `routing` (auto|standard|hd) and `tiling` are defaults: `load` and `prepare`
    take either per call. `guess_in_labels` applies the reference system's rule (the
    fallback guess is also a label); by default it is kept apart in `Decision.guess`.
    """

    def __init__(self, models_dir: Path | str = DEFAULT_MODELS, routing: str = "auto",
                 device: str = "auto", precision: str = "auto", threads: int = 0,
                 tiling: bool = True, threshold: float | None = None, max_pixels: int = MAX_PIXELS,
                 guess_in_labels: bool = False):
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}")
        self.models_dir, self.routing, self.device = Path(models_dir), routing, device
        self.precision, self.threads = precision, threads
        self.tiling, self.threshold, self.max_pixels = tiling, threshold, max_pixels
        self.guess_in_labels = guess_in_labels
        self._models: dict[str, Model] = {}
        self._lock = threading.Lock()
        self._buffers: dict[str, BatchBuffer] = {}
        self._threshold_cache: dict[str, tuple[np.ndarray, dict[str, float]]] = {}

    def model(self, role: str) -> Model:
        """The model for a role, opened once (thread-safe)."""
        with self._lock:
            if role not in self._models:
                m = open_role(self.models_dir, role, self.device, self.precision, self.threads)
                if m.meta.role != role:
                    raise MetadataError(f"{m.path}: metadata says role {m.meta.role!r}, expected {role!r}")
                self._models[role] = m
            return self._models[role]

    def check(self) -> list[Model]:
        """Open every model the routing can reach (auto: both), so that a missing or invalid
        model or provider stops a run before it reads an image or touches an output."""
        return [self.model(role) for role in (ROLES if self.routing == "auto" else (self.routing,))]

    def classes(self) -> list[str]:
        """The class names of the models the routing can reach, in model order, each once."""
        return list(dict.fromkeys(c for m in self.check() for c in m.meta.classes))

    def decode(self, data: bytes, *, routing: str | None = None, full: bool = False) -> tuple[Decoded, str]:
        """Decode image bytes for the model they route to (from the header's size): a JPEG at the
        reduced size that still covers that model's views, unless `full`. Returns the pixels and the role."""
        roles: list[str] = []

        def target(w: int, h: int) -> tuple[float, tuple[int, int]] | None:
            roles.append(route(w, h, routing or self.routing))
            if full:
                return None
            meta = self.model(roles[0]).meta
            return meta.view_fraction, meta.input_size

        decoded = decode(data, target, self.max_pixels)
        return decoded, roles[0] if roles else route(decoded.width, decoded.height, routing or self.routing)

    def load(self, data: bytes, *, routing: str | None = None, tiling: bool | None = None,
             keep_image: bool = False, timings_ms: dict[str, float] | None = None) -> Prepared:
        """`decode` then `prepare`, routing once; with `keep_image` the image is decoded at full
        size and kept on the result (to draw on). Decoding time is added to `timings_ms["decode"]`."""
        timings = dict(timings_ms or {})
        t0 = time.perf_counter()
        decoded, role = self.decode(data, routing=routing, full=keep_image)
        t1 = time.perf_counter()
        timings["decode"] = timings.get("decode", 0.0) + (t1 - t0) * 1e3
        prepared = self._render(decoded, role, tiling, timings, t1)
        if keep_image:
            prepared.decoded = decoded
        return prepared

    def prepare(self, decoded: Decoded, *, routing: str | None = None, tiling: bool | None = None,
                timings_ms: dict[str, float] | None = None) -> Prepared:
        """Route decoded pixels (`routing` overrides the engine's: a role sends the image to that
        model) and render their views for that model."""
        t0 = time.perf_counter()
        role = route(decoded.width, decoded.height, routing or self.routing)
        return self._render(decoded, role, tiling, timings_ms, t0)

    def _render(self, decoded: Decoded, role: str, tiling: bool | None, timings_ms: dict[str, float] | None,
                t0: float) -> Prepared:
        """The views of a routed image, as the model's float input; preprocessing time counted from t0."""
        tiling = self.tiling if tiling is None else tiling
        meta = self.model(role).meta
        h, w = decoded.bgr.shape[:2]
        views, names = _views(w, h, meta.view_fraction, tiling)
        pixels = model_input(render_views(decoded.bgr, views, meta.input_size))
        timings = dict(timings_ms or {})
        timings["preprocess"] = (time.perf_counter() - t0) * 1e3
        return Prepared(role, tiling, decoded.width, decoded.height, views, names, pixels, timings)

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
                self._buffers[role] = BatchBuffer(view_count() * len(idx), model.meta.input_size)
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

    def classify(self, items: list[Prepared], hook: ScoreHook | None = None) -> list[Verdict]:
        """Run prepared images (any mix of roles), merge each one's views and decide (labels, guess,
        presence, with the model's presence threshold); `hook` (e.g. a stream's smoothing)
        transforms the merged scores before the decision."""
        all_scores, infer_ms = self.view_scores(items)
        verdicts = []
        for p, scores, ms in zip(items, all_scores, infer_ms, strict=True):
            t1 = time.perf_counter()
            model = self.model(p.role)
            meta = model.meta
            thresholds, named = self.thresholds(p.role)
            fallback, presence_threshold = meta.fallback_min_score, meta.presence_threshold
            decision = decide_image(scores, meta.classes, p.view_names, thresholds, fallback, p.role, hook,
                                    presence_threshold, self.guess_in_labels, meta.merge)
            timings = {**p.timings_ms, "infer": ms, "postprocess": (time.perf_counter() - t1) * 1e3}
            verdicts.append(Verdict(decision, p.role, model.provider, model.precision, p.tiling, p.width, p.height,
                                    dict(named), fallback, presence_threshold, self.guess_in_labels, p.views,
                                    timings))
        return verdicts

    def thresholds(self, role: str) -> tuple[np.ndarray, dict[str, float]]:
        """A role's thresholds (with the engine's `threshold` override) as a vector and by name, cached."""
        if role not in self._threshold_cache:
            meta = self.model(role).meta
            vec = resolve_thresholds(meta.threshold_vector(), self.threshold)
            self._threshold_cache[role] = (vec, {c: round(float(t), 6) for c, t in zip(meta.classes, vec, strict=True)})
        return self._threshold_cache[role]

    def classify_image(self, decoded: Decoded) -> Verdict:
        """Convenience: prepare and classify one decoded image with the engine's defaults."""
        return self.classify([self.prepare(decoded)])[0]
