"""The self-description every sixview ONNX file carries in its `metadata_props`.

Values are JSON. `ModelMeta.from_props` validates a file's properties and
`ModelMeta.to_props` writes them; the converter and the tests use the latter.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT_VERSION = 1
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
OPTIONAL = ("presence_threshold",)  # absent: the default (files written before the key stay valid)
KEYS = REQUIRED + OPTIONAL
DEFAULT_FALLBACK = {"rule": "top1", "min_score": 0.20}
DEFAULT_TILING = {"view_fraction": 0.60}
DEFAULT_THRESHOLD = {"standard": 0.50, "hd": 0.30}


class MetadataError(ValueError):
    """A model file whose metadata is missing or invalid."""


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
    format: int = FORMAT_VERSION
    presence_threshold: float = 0.0  # presence (P(any class)) below this: none of the classes

    @property
    def view_fraction(self) -> float:
        """Side of a corner/centre view as a fraction of the image side."""
        return float(self.tiling["view_fraction"])

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
        d["sixview.format"] = d.pop("format")
        d["classes"] = list(self.classes)
        d["input_size"] = list(self.input_size)
        keys = KEYS if self.presence_threshold else REQUIRED  # 0.0 (the default) is not written
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

        if v["sixview.format"] != FORMAT_VERSION:
            raise bad("sixview.format", f"is {v['sixview.format']!r}, this runtime reads {FORMAT_VERSION}")
        classes = v["classes"]
        if (not isinstance(classes, list) or not classes
                or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes)):
            raise bad("classes", "must be a non-empty list of unique names")
        if v["role"] not in ROLES:
            raise bad("role", f"must be one of {ROLES}")
        size = v["input_size"]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
            raise bad("input_size", "must be [h, w] positive integers")
        if v["input_layout"] != "NHWC":
            raise bad("input_layout", "must be NHWC")
        if v["input_range"] != "0..255 RGB":
            raise bad("input_range", "must be '0..255 RGB'")
        th = v["thresholds"]
        if not isinstance(th, dict) or set(th) != set(classes):
            raise bad("thresholds", "must map every class to a threshold")
        if not all(isinstance(t, int | float) and 0.0 <= t <= 1.0 for t in th.values()):
            raise bad("thresholds", "must be numbers in [0, 1]")
        fb = v["fallback"]
        if not (isinstance(fb, dict) and isinstance(fb.get("min_score"), int | float)):
            raise bad("fallback", "must be an object with 'min_score'")
        tl = v["tiling"]
        if not (isinstance(tl, dict) and isinstance(tl.get("view_fraction"), int | float)
                and 0.0 < tl["view_fraction"] <= 1.0):
            raise bad("tiling", "must be an object with 'view_fraction' in (0, 1]")
        if v["precision"] not in PRECISIONS:
            raise bad("precision", f"must be one of {PRECISIONS}")
        if not isinstance(v["provenance"], dict):
            raise bad("provenance", "must be an object")
        pt = v.get("presence_threshold", 0.0)
        if not (isinstance(pt, int | float) and not isinstance(pt, bool) and 0.0 <= pt <= 1.0):
            raise bad("presence_threshold", "must be a number in [0, 1]")
        return cls(
            classes=tuple(classes),
            role=v["role"],
            input_size=(size[0], size[1]),
            thresholds={c: float(th[c]) for c in classes},
            precision=v["precision"],
            fallback=fb,
            tiling=tl,
            provenance=v["provenance"],
            presence_threshold=float(pt),
        )
