"""The self-description every sixview ONNX file carries in its `metadata_props`.

Values are JSON. `ModelMeta.from_props` validates a file's properties and
`ModelMeta.to_props` writes them; the converter and the tests use the latter.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ModelInvalid
from .tiling import view_count

FORMAT_VERSION = 1
INPUT_NAME = "images"  # the graph's one input, NHWC float32 (convert.export names it)
VIEWS_PER_FRAME = view_count()  # edge.tiling.VIEW_NAMES
ONE_PASS_FORMAT = 2  # a graph that computes the six views itself (tiling.in_graph): older runtimes must refuse it
ROLES = ("standard", "hd")
PRECISIONS = ("fp32", "fp16", "int8")
REQUIRED = (
    "sixview.format",
    "classes",
    "role",
    "input_size",
    "input_layout",
    "input_range",
    "thresholds",
    "fallback",
    "tiling",
    "precision",
    "provenance",
)
OPTIONAL = ("presence_threshold", "merge")  # absent: the default (files written before the key stay valid)
KEYS = REQUIRED + OPTIONAL
DEFAULT_FALLBACK = {"rule": "top1", "min_score": 0.20}
DEFAULT_TILING = {"view_fraction": 0.60}
DEFAULT_THRESHOLD = {"standard": 0.50, "hd": 0.30}
DEFAULT_MERGE = {"kind": "max"}  # the max over the views (edge.merge.merged_scores)
MERGE_KEYS = {"max": {"kind", "fitted_on"}, "logit_linear": {"kind", "w", "bias", "fitted_on"}}


class MetadataError(ModelInvalid, ValueError):
    """A model file whose metadata is missing or invalid (a setup error, code `model_invalid`)."""


@dataclass(frozen=True)
class ModelMeta:
    """What a sixview model says about itself."""

    classes: tuple[str, ...]
    role: str
    input_size: tuple[int, int]  # (h, w)
    thresholds: dict[str, float]
    precision: str
    fallback: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_FALLBACK))
    tiling: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TILING))
    provenance: dict[str, Any] = field(default_factory=dict)
    input_layout: str = "NHWC"
    input_range: str = "0..255 RGB"
    presence_threshold: float = 0.0  # presence (P(any class)) below this: none of the classes
    merge: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_MERGE))  # edge.merge.merged_scores

    @property
    def view_fraction(self) -> float:
        """Side of a corner/centre view as a fraction of the image side."""
        return float(self.tiling["view_fraction"])

    @property
    def format(self) -> int:
        """`sixview.format`: 2 for a graph that computes the views itself, else 1."""
        return ONE_PASS_FORMAT if self.views_in_graph else FORMAT_VERSION

    @property
    def views_in_graph(self) -> bool:
        """The graph takes the whole frame and returns the six views' scores (one backbone pass, pooled
        windows: `convert.onepass`); else it takes each view as its own input."""
        return bool(self.tiling.get("in_graph", False))

    @property
    def frame_inputs(self) -> int:
        """Model inputs per six-view frame: the six views, or the frame itself for a one-pass graph."""
        return 1 if self.views_in_graph else VIEWS_PER_FRAME

    @property
    def rows_per_input(self) -> int:
        """Score rows the graph returns per input: the six views of a one-pass graph's frame, else one."""
        return VIEWS_PER_FRAME if self.views_in_graph else 1

    @property
    def fallback_min_score(self) -> float:
        """When no class passes its threshold, the top class is the guess if it scores above this."""
        return float(self.fallback["min_score"])

    def threshold_vector(self) -> list[float]:
        """Thresholds in class order."""
        return [self.thresholds[c] for c in self.classes]

    def to_props(self) -> dict[str, str]:
        """The `metadata_props` key/value strings (JSON values)."""
        d = asdict(self)
        d["sixview.format"] = self.format
        d["classes"] = list(self.classes)
        d["input_size"] = list(self.input_size)
        keys = [*REQUIRED, *(["presence_threshold"] if self.presence_threshold else []),  # defaults: not written
                *(["merge"] if self.merge.get("kind", "max") != "max" else [])]
        return {k: json.dumps(d[k]) for k in keys}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMeta:
        """Parse and validate `metadata_props`; raise MetadataError naming what is wrong."""
        missing = [k for k in REQUIRED if k not in props]
        if missing:
            raise MetadataError(f"{source}: not a sixview model, metadata missing: {', '.join(missing)}")
        try:
            v = {k: json.loads(props[k]) for k in KEYS if k in props}
        except json.JSONDecodeError as e:
            raise MetadataError(f"{source}: metadata value is not JSON ({e})") from None

        def bad(key: str, why: str) -> MetadataError:
            return MetadataError(f"{source}: metadata '{key}' {why}")

        fmt = v["sixview.format"]
        if type(fmt) is not int or fmt not in (FORMAT_VERSION, ONE_PASS_FORMAT):
            raise bad("sixview.format", f"is {fmt!r}, this runtime reads {FORMAT_VERSION} and {ONE_PASS_FORMAT}")
        classes = v["classes"]
        if (not isinstance(classes, list) or not classes
                or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes)):
            raise bad("classes", "must be a non-empty list of unique names")
        if v["role"] not in ROLES:
            raise bad("role", f"must be one of {ROLES}")
        size = v["input_size"]
        if not (isinstance(size, list) and len(size) == 2 and all(type(s) is int and s > 0 for s in size)):
            raise bad("input_size", "must be [h, w] positive integers")
        if v["input_layout"] != "NHWC":
            raise bad("input_layout", "must be NHWC")
        if v["input_range"] != "0..255 RGB":
            raise bad("input_range", "must be '0..255 RGB'")
        th = v["thresholds"]
        if not isinstance(th, dict) or set(th) != set(classes):
            raise bad("thresholds", "must map every class to a threshold")
        if not all(_unit(t) for t in th.values()):
            raise bad("thresholds", "must be numbers in [0, 1]")
        fallback = _fallback(v["fallback"], bad)
        tl = _tiling(v["tiling"], fmt, bad)
        if v["precision"] not in PRECISIONS:
            raise bad("precision", f"must be one of {PRECISIONS}")
        if not isinstance(v["provenance"], dict):
            raise bad("provenance", "must be an object")
        pt = v.get("presence_threshold", 0.0)
        if not _unit(pt):
            raise bad("presence_threshold", "must be a number in [0, 1]")
        merge = _merge(v.get("merge", DEFAULT_MERGE), classes, bad)
        return cls(
            classes=tuple(classes),
            role=v["role"],
            input_size=(size[0], size[1]),
            thresholds={c: float(th[c]) for c in classes},
            precision=v["precision"],
            fallback=fallback,
            tiling=tl,
            provenance=v["provenance"],
            presence_threshold=float(pt),
            merge=merge,
        )


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _unit(x: Any) -> bool:
    """A finite number (not a boolean) in [0, 1]."""
    return _number(x) and 0.0 <= x <= 1.0


def _tiling(tl: Any, fmt: int, bad) -> dict[str, Any]:
    """The validated `tiling`: the view fraction, and `in_graph` (true only in a format-2 file)."""
    if not (isinstance(tl, dict) and _unit(tl.get("view_fraction")) and tl["view_fraction"] > 0.0):
        raise bad("tiling", "must be an object with 'view_fraction' in (0, 1]")
    if set(tl) - {"view_fraction", "in_graph"} or not isinstance(tl.get("in_graph", False), bool):
        raise bad("tiling", "may hold only 'view_fraction' and 'in_graph' (true or false)")
    if tl.get("in_graph", False) != (fmt == ONE_PASS_FORMAT):
        raise bad("tiling", f"'in_graph' is true exactly in sixview.format {ONE_PASS_FORMAT} files")
    return {"view_fraction": float(tl["view_fraction"]), **({"in_graph": True} if tl.get("in_graph") else {})}


def _fallback(fb: Any, bad) -> dict[str, Any]:
    """The validated `fallback` (the only rule: top1, the top class above `min_score`)."""
    if not (isinstance(fb, dict) and set(fb) == set(DEFAULT_FALLBACK)):
        raise bad("fallback", "must be an object with 'rule' and 'min_score' (and nothing else)")
    if fb["rule"] != "top1":
        raise bad("fallback", f"'rule' must be 'top1' (the top class), not {fb['rule']!r}")
    if not _unit(fb["min_score"]):
        raise bad("fallback", f"'min_score' must be a number in [0, 1], not {fb['min_score']!r}")
    return {"rule": "top1", "min_score": float(fb["min_score"])}


def _merge(mg: Any, classes: list[str], bad) -> dict[str, Any]:
    """The validated `merge`, normalised (floats; the bias in class order)."""
    if not isinstance(mg, dict) or mg.get("kind") not in MERGE_KEYS:
        raise bad("merge", f"must be an object whose 'kind' is one of {tuple(MERGE_KEYS)}")
    kind = mg["kind"]
    extra = sorted(set(mg) - MERGE_KEYS[kind])
    if extra:
        raise bad("merge", f"({kind}) has unknown keys: {', '.join(extra)}")
    if "fitted_on" in mg and not isinstance(mg["fitted_on"], str):
        raise bad("merge", "'fitted_on' must be a string")
    out: dict[str, Any] = {"kind": kind}
    if kind == "logit_linear":
        w, bias = mg.get("w"), mg.get("bias")
        if not (isinstance(w, list) and len(w) == 3 and all(_number(x) for x in w)):
            raise bad("merge", "'w' must be 3 finite numbers [w_whole, w_crop_max, w_crop_mean]")
        if not isinstance(bias, dict) or set(bias) != set(classes):
            raise bad("merge", "'bias' must map every class (and only the classes) to a number")
        if not all(_number(b) for b in bias.values()):
            raise bad("merge", "'bias' values must be finite numbers")
        out.update(w=[float(x) for x in w], bias={c: float(bias[c]) for c in classes})
    if "fitted_on" in mg:
        out["fitted_on"] = mg["fitted_on"]
    return out
