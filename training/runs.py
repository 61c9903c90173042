"""Read a finished run folder back: the model, its config and metrics, real sample images.

Used by the converter (parity on real images) and by evaluation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import training.layers  # noqa: E402,F401  (registers custom layers for load_model)
from training.errors import RunError  # noqa: E402


@dataclass
class Run:
    """A loaded run: the Keras model, config.json, metrics.json and the checkpoint used."""

    model: keras.Model
    config: dict[str, Any]
    metrics: dict[str, Any]
    checkpoint: Path

    @property
    def classes(self) -> list[str]:
        """Ordered class names of the model's outputs."""
        return list(self.config["classes"])

    @property
    def input_size(self) -> tuple[int, int]:
        """Model input (H, W)."""
        h, w = self.config["input_size"]
        return int(h), int(w)


def load_run(run_dir: str | Path, which: str = "best", float32: bool = True) -> Run:
    """Load `<run_dir>/<which>.keras` with its config and metrics.

    With `float32` (default) the model is rebuilt by the current `build_model`
    in float32 and the checkpoint's weights copied in by layer name: a
    mixed-precision run comes back in float32, and checkpoints from earlier
    builders (Dense pointwise layers, Keras GELU/Normalization) come back in the
    export-friendly graph. Outputs are identical.
    """
    d = Path(run_dir).expanduser()
    ckpt = d / f"{which}.keras"
    if not (d / "config.json").exists():
        raise RunError(f"{d}: not a run folder (no config.json)")
    if not ckpt.exists():
        raise RunError(f"{d}: no checkpoint {ckpt.name}")
    config = json.loads((d / "config.json").read_text())
    metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").exists() else {}
    model = keras.models.load_model(ckpt, compile=False)
    if float32 and "model" in config:
        model = _rebuild_float32(model, config["model"])
    from training.models import use_jit

    model.jit_compile = use_jit("auto")
    return Run(model=model, config=config, metrics=metrics, checkpoint=ckpt)


def _rebuild_float32(model: keras.Model, model_kwargs: dict[str, Any]) -> keras.Model:
    from training.models import build_model, copy_backbone, weighted_layers

    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        f32 = build_model(weights="none", **model_kwargs)
    finally:
        keras.mixed_precision.set_global_policy(old)
    if copy_backbone(model, f32) != len(weighted_layers(f32)):
        raise RunError("checkpoint does not match its config.json model (cannot rebuild)")
    return f32


def sample_images(config: dict[str, Any], n: int, seed: int = 0,
                  split: str | None = None) -> np.ndarray:
    """`n` real images from the run's data source, uint8 (n, H, W, 3) RGB at the input size.

    Drawn class-balanced from the test split (else the training split), resized
    bicubically like the training pipeline.
    """
    from training.cache import load_split
    from training.datasets import open_source
    from training.labels import select, stratified_order
    from training.pipeline import resize_images

    cache = Path(config["cache_dir"]).expanduser() if config.get("cache_dir") else None
    source = open_source(config["data"], cache)
    name = split or config.get("test_split") or config.get("train_split") or source.splits[0]
    sp = load_split(source, name, cache, progress=False)
    sel = select(sp.labels, sp.classes, config["classes"], negatives=True)
    if len(sel) == 0:
        raise RunError(f"no images in split {name!r} of {config['data']}")
    order = stratified_order(sel.targets, seed)
    rows = np.resize(order, n)  # repeats when n exceeds the split
    h, w = (int(v) for v in config["input_size"])
    out = np.empty((n, h, w, 3), np.uint8)
    for k, r in enumerate(rows):
        img = resize_images(np.asarray(sp.image(int(sel.indices[r]))), (h, w)).numpy()
        out[k] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out
