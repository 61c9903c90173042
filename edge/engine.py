"""The dual engine and the one per-frame path: decode -> route -> views -> infer -> merge -> decide.

Standard sees thumbnails, HD real photos. Two halves, composed by `Engine`:

- `Renderer`: decoding, routing and the views, from the models' metadata alone (no session):
  `load(data)` (`decode`, JPEGs at a reduced size chosen for the model the image routes to,
  then the views: a `Prepared` item) and `prepare(decoded)` (pixels already decoded: camera
  frames). Ray's decoding tasks run a `Renderer` on metadata read on the driver.
- `Runner`: the model sessions (each opened on first use), one model call per role (`view_scores`).
- `Engine`: both, plus each role's `DecisionRule` (`edge/rule.py`, resolved once): `classify(items)`
  gives one `Verdict` per item (merge, optional per-stream score hook, decision).

Loading is separate from classifying so that a scan can load in worker threads while the main thread
runs the model. An image is routed once, in `load` or `prepare`; its `Prepared` item carries the role
and the tiling it was rendered with, so per-call settings (a camera's keys, a request's options) never
change the engine itself.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import MAX_PIXELS
from .decode import Decoded, decode
from .merge import Decision, ScoreHook
from .metadata import ROLES, MetadataError, ModelMeta
from .model import Model, check_request, model_file, open_role
from .onnx_props import PropsError, read_props
from .preprocess import BatchBuffer, model_input, render_views
from .rule import DecisionRule
from .tiling import View, view_boxes

ROUTINGS = ("auto", *ROLES)
THUMBNAIL_MAX_SIDE = 64  # short side <= this: a CIFAR-like thumbnail -> Standard
try:  # the shipped models: in an installed wheel the `sixview` package's data, in a checkout models/
    from sixview import MODELS_DIR as DEFAULT_MODELS
except ImportError:  # edge built without the `sixview` package (the images: SIXVIEW_MODELS names theirs)
    DEFAULT_MODELS = Path(__file__).resolve().parent.parent / "models"


def route(width: int, height: int, routing: str = "auto") -> str:
    """The role that should see an image: `routing` itself, or by context when 'auto'."""
    if routing != "auto":
        return routing
    return "standard" if min(width, height) <= THUMBNAIL_MAX_SIDE else "hd"


def reachable(routing: str) -> tuple[str, ...]:
    """The roles a routing can send an image to (auto: both)."""
    if routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {ROUTINGS}")
    return ROLES if routing == "auto" else (routing,)


def check_role(meta: ModelMeta, role: str, path: Path) -> ModelMeta:
    """`meta` if its role is `role`; else a MetadataError naming the file."""
    if meta.role != role:
        raise MetadataError(f"{path}: metadata says role {meta.role!r}, expected {role!r}")
    return meta


def role_metas(models_dir: Path | str, routing: str = "auto", device: str = "auto",
               precision: str = "auto") -> dict[str, ModelMeta]:
    """The metadata of each role the routing can reach, read without a session from the file
    `model_file` picks (device auto: the CPU's) and checked, so that a missing or invalid model
    stops a run before any output is touched (a Ray driver's `Renderer` metadata)."""
    check_request(device, precision)
    metas = {}
    for role in reachable(routing):
        path = model_file(Path(models_dir), role, "cpu" if device == "auto" else device, precision)
        try:
            meta = ModelMeta.from_props(read_props(path), str(path))
        except (PropsError, OSError) as e:
            raise MetadataError(f"{path}: cannot read its metadata ({e})") from None
        metas[role] = check_role(meta, role, path)
    return metas


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
    pixels: np.ndarray  # (views, h, w, 3) float32 RGB 0..255: the model's input (one-pass graphs: the whole view)
    timings_ms: dict[str, float]
    decoded: Decoded | None = None  # kept only when asked for (to draw on it)


@dataclass
class Verdict:
    """One image's result: the decision plus what its record says about how it was reached."""

    decision: Decision
    role: str
    provider: str
    precision: str
    tiling: bool
    width: int
    height: int
    thresholds: dict[str, float]  # the rule's, by class (6 decimals)
    views: tuple[View, ...]
    timings_ms: dict[str, float]


class Renderer:
    """Decode, route and render views from the models' metadata (`metas`: role -> ModelMeta, or a
    function of the role); `routing` and `tiling` are defaults that `load` and `prepare` take per call."""

    def __init__(self, metas: Mapping[str, ModelMeta] | Callable[[str], ModelMeta], routing: str = "auto",
                 tiling: bool = True, max_pixels: int = MAX_PIXELS):
        reachable(routing)
        self.metas, self.routing, self.tiling, self.max_pixels = metas, routing, tiling, max_pixels

    def meta(self, role: str) -> ModelMeta:
        """The metadata of a role's model."""
        if callable(self.metas):
            return self.metas(role)
        if role not in self.metas:
            raise MetadataError(f"no {role} model in this run's models")
        return self.metas[role]

    def decode(self, data: bytes, *, routing: str | None = None, full: bool = False) -> tuple[Decoded, str]:
        """Decode image bytes for the model they route to (from the header's size): a JPEG at the
        reduced size that still covers that model's views, unless `full`. Returns the pixels and the role."""
        roles: list[str] = []

        def target(w: int, h: int) -> tuple[float, tuple[int, int]] | None:
            roles.append(route(w, h, routing or self.routing))
            if full:
                return None
            meta = self.meta(roles[0])  # a one-pass graph sees the whole frame at its input size
            return (1.0 if meta.views_in_graph else meta.view_fraction), meta.input_size

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
        """Route decoded pixels (`routing` overrides the default) and render their views for that model."""
        t0 = time.perf_counter()
        role = route(decoded.width, decoded.height, routing or self.routing)
        return self._render(decoded, role, tiling, timings_ms, t0)

    def _render(self, decoded: Decoded, role: str, tiling: bool | None, timings_ms: dict[str, float] | None,
                t0: float) -> Prepared:
        """The views of a routed image, as the model's float input; preprocessing time counted from t0."""
        tiling = self.tiling if tiling is None else tiling
        meta = self.meta(role)
        h, w = decoded.bgr.shape[:2]
        views, names = _views(w, h, meta.view_fraction, tiling)
        pixels = model_input(render_views(decoded.bgr, views[:1] if meta.views_in_graph else views, meta.input_size))
        timings = dict(timings_ms or {})
        timings["preprocess"] = (time.perf_counter() - t0) * 1e3
        return Prepared(role, tiling, decoded.width, decoded.height, views, names, pixels, timings)


def item_scores(out: np.ndarray, items: list[Prepared], rows: int) -> list[np.ndarray]:
    """Each item's (views, classes) rows of one model call on their packed pixels (`rows` per input: 1, or a
    one-pass frame's six), cut to the views it was rendered with (without tiling: the whole view)."""
    ends = np.cumsum([len(p.pixels) * rows for p in items])
    return [out[e - len(p.pixels) * rows:e][:len(p.views)] for p, e in zip(items, ends, strict=True)]


class Runner:
    """The model sessions (each role's opened on first use, thread-safe) and one model call per role."""

    def __init__(self, models_dir: Path | str = DEFAULT_MODELS, device: str = "auto", precision: str = "auto",
                 threads: int = 0):
        self.models_dir, self.device, self.precision, self.threads = Path(models_dir), device, precision, threads
        self._models: dict[str, Model] = {}
        self._lock = threading.Lock()
        self._buffers: dict[str, BatchBuffer] = {}

    def model(self, role: str) -> Model:
        """The model for a role, opened once; its metadata must name that role."""
        with self._lock:
            if role not in self._models:
                m = open_role(self.models_dir, role, self.device, self.precision, self.threads)
                check_role(m.meta, role, m.path)
                self._models[role] = m
            return self._models[role]

    def view_scores(self, items: list[Prepared]) -> tuple[list[np.ndarray], list[float]]:
        """Each item's raw (views, classes) scores, one model call per role, and its share of the call's ms."""
        scores: list[np.ndarray] = [np.empty(0)] * len(items)
        infer_ms = [0.0] * len(items)
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(items):
            groups.setdefault(p.role, []).append(i)
        for role in sorted(groups):
            idx = groups[role]
            model = self.model(role)
            if role not in self._buffers:
                self._buffers[role] = BatchBuffer(model.meta.frame_inputs * len(idx), model.meta.input_size)
            batch = self._buffers[role].pack([items[i].pixels for i in idx])
            t0 = time.perf_counter()
            out = model(batch)
            ms = (time.perf_counter() - t0) * 1e3 / len(idx)
            for i, s in zip(idx, item_scores(out, [items[i] for i in idx], model.meta.rows_per_input), strict=True):
                scores[i], infer_ms[i] = s, ms
        return scores, infer_ms


class Engine:
    """A `Renderer` and a `Runner` on one models folder, and each role's `DecisionRule`.

    `routing` (auto|standard|hd) and `tiling` are defaults: `load` and `prepare` take either
    per call. `threshold` (one for every class) and `guess_in_labels` (the reference system's
    rule: the fallback guess is also a label) resolve into the rules, once per role.
    """

    def __init__(self, models_dir: Path | str = DEFAULT_MODELS, routing: str = "auto",
                 device: str = "auto", precision: str = "auto", threads: int = 0,
                 tiling: bool = True, threshold: float | None = None, max_pixels: int = MAX_PIXELS,
                 guess_in_labels: bool = False):
        self.runner = Runner(models_dir, device, precision, threads)
        self.renderer = Renderer(lambda role: self.runner.model(role).meta, routing, tiling, max_pixels)
        self.models_dir, self.routing, self.tiling, self.max_pixels = Path(models_dir), routing, tiling, max_pixels
        self.threshold, self.guess_in_labels = threshold, guess_in_labels
        self.load, self.prepare, self.decode = self.renderer.load, self.renderer.prepare, self.renderer.decode
        self.model, self.view_scores = self.runner.model, self.runner.view_scores
        self._rules: dict[str, DecisionRule] = {}

    def roles(self) -> tuple[str, ...]:
        """The roles the engine's routing can reach (auto: both)."""
        return reachable(self.routing)

    def check(self) -> list[Model]:
        """Open every model the routing can reach, so that a missing or invalid model or
        provider stops a run before it reads an image or touches an output."""
        return [self.model(role) for role in self.roles()]

    def classes(self) -> list[str]:
        """The class names of the models the routing can reach, in model order, each once."""
        return list(dict.fromkeys(c for m in self.check() for c in m.meta.classes))

    def rule(self, role: str, threshold: float | None = None) -> DecisionRule:
        """A role's decision rule (the engine's threshold and guess_in_labels; resolved once);
        with `threshold`, that rule with one threshold for every class (a request's own)."""
        if role not in self._rules:
            self._rules[role] = DecisionRule.of(self.model(role).meta, threshold=self.threshold,
                                                guess_in_labels=self.guess_in_labels)
        return self._rules[role].with_threshold(threshold)

    def classify(self, items: list[Prepared], hook: ScoreHook | None = None,
                 rules: Mapping[str, DecisionRule] | None = None) -> list[Verdict]:
        """Run prepared images (any mix of roles) and decide each one (`rules`: role -> rule, default
        the engine's); `hook` (e.g. a stream's smoothing) transforms the merged scores first."""
        all_scores, infer_ms = self.view_scores(items)
        return [self.verdict(p, s, ms, hook, (rules or {}).get(p.role))
                for p, s, ms in zip(items, all_scores, infer_ms, strict=True)]

    def verdict(self, item: Prepared, scores: np.ndarray, infer_ms: float, hook: ScoreHook | None = None,
                rule: DecisionRule | None = None) -> Verdict:
        """One item's verdict from its view scores, by `rule` (default: the engine's for its role)."""
        t1 = time.perf_counter()
        model = self.model(item.role)
        rule = rule or self.rule(item.role)
        decision = rule.decide(scores, item.view_names, item.role, hook)
        timings = {**item.timings_ms, "infer": infer_ms, "postprocess": (time.perf_counter() - t1) * 1e3}
        return Verdict(decision, item.role, model.provider, model.precision, item.tiling, item.width, item.height,
                       dict(rule.named_thresholds), item.views, timings)

    def classify_image(self, decoded: Decoded) -> Verdict:
        """Convenience: prepare and classify one decoded image with the engine's defaults."""
        return self.classify([self.prepare(decoded)])[0]
