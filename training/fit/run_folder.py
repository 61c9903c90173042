"""The run folder that `sixview train` and `sixview adapt` leave, written and read back.

A run folder is a contract other commands rely on: config.json, best.keras,
last.keras + state.json (for --resume; both written atomically, as is best.keras), history.csv, curves.png, metrics.json
(written last: the run finished), and the data or adaptation report. The
converter and evaluation read it back: the model, its config and metrics, real
sample images of its data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

import training.models.layers  # noqa: F401  (registers custom layers for load_model)
from edge.atomic import atomic_path, atomic_write
from training.data.cache import load_split
from training.data.datasets import open_source
from training.data.labels import select, stratified_order
from training.data.tfdata import render_whole
from training.errors import RunError
from training.fit.plots import training_curves
from training.fit.tracking import Tracker, open_tracker
from training.models.factory import build_model, copy_backbone, use_jit, weighted_layers


def write_json(path: Path, data: dict) -> None:
    """Write `data` as indented JSON, atomically (numpy numbers and arrays, paths allowed)."""
    atomic_write(path, json.dumps(data, indent=2, default=_json_default))


def save_model(model: keras.Model, path: Path) -> None:
    """Save `model` as `path` (.keras) atomically: a run killed while saving keeps the file it had."""
    with atomic_path(path, keep_suffix=True) as tmp:  # Keras saves only to a name ending .keras
        model.save(tmp)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, (Path, np.ndarray)):
        return str(o) if isinstance(o, Path) else o.tolist()
    raise TypeError(type(o).__name__)


def read_state(out: Path) -> dict:
    """The run's state.json (epochs done, best value, tracker run id...), or {} if there is none."""
    return json.loads((out / "state.json").read_text()) if (out / "state.json").exists() else {}


class RunState(keras.callbacks.Callback):
    """Saves last.keras + state.json every epoch, with the run's time so far: `train_s` (the training
    steps), `images` (trained on) and `wall_s` (from `started`, set-up and validation included), so a
    run resumed after an interruption keeps the time of the epochs it finished."""

    def __init__(self, out: Path, state: dict, images_per_epoch: int, started: float) -> None:
        super().__init__()
        self.out, self.state, self.images_per_epoch = out, state, images_per_epoch
        self._mark, self._epoch_s = started, 0.0
        self._t0: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._t0, self._epoch_s = time.perf_counter(), 0.0

    def _stop_clock(self) -> None:
        if self._t0 is not None:
            self._epoch_s += time.perf_counter() - self._t0
            self._t0 = None

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._stop_clock()

    def add_wall(self) -> None:
        """Adds the wall time since the last epoch ended (or the run started) to the state."""
        now = time.perf_counter()
        self.state["wall_s"] = self.state.get("wall_s", 0.0) + now - self._mark
        self._mark = now

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._stop_clock()
        self.state["epoch"] = epoch + 1
        self.state["train_s"] = self.state.get("train_s", 0.0) + self._epoch_s
        self.state["images"] = self.state.get("images", 0) + self.images_per_epoch
        self.add_wall()
        save_model(self.model, self.out / "last.keras")
        write_json(self.out / "state.json", self.state)


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model as `path` (atomically) whenever `monitor` improves on the run's best, lower
    being better with mode "min", higher with "max", and records that best in `state` (best, best_epoch,
    monitor): state.json names the epoch best.keras holds, and a resumed run starts from its best."""

    def __init__(self, path: Path, monitor: str, mode: str, state: dict) -> None:
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be min or max, not {mode!r}")
        self.path, self.monitor, self.sign, self.state = path, monitor, 1.0 if mode == "min" else -1.0, state
        if state.get("monitor", "val_loss") != monitor:  # a best of another value is no best of this one
            for key in ("best", "best_epoch"):
                state.pop(key, None)
        state["monitor"] = monitor

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value):
            return
        best = self.state.get("best")
        if best is None or self.sign * value < self.sign * best:
            self.state.update(best=float(value), best_epoch=epoch + 1)
            save_model(self.model, self.path)


def run_tracker(uri: str | None, out: Path, state: dict, params: dict[str, Any] | None) -> Tracker:
    """The run's tracker: it continues the run whose id `state` holds (a resumed run), else
    starts one and records its id in `state`; `params` (None when resuming) are logged."""
    tracker = open_tracker(uri, out, out.name, run_id=state.get("mlflow_run_id"))
    state["mlflow_run_id"] = tracker.run_id
    if params is not None:
        tracker.log_params(params)
    return tracker


def run_callbacks(out: Path, monitor: str, state: dict, patience: int, min_lr: float, resume: bool,
                  mode: str = "min", plateau: bool = True) -> list[keras.callbacks.Callback]:
    """best.keras whenever `monitor` improves on the best in `state`, the learning rate halved after two
    epochs without improvement (with `plateau`; not with a schedule), early stopping after
    `patience` (best weights restored), and the per-epoch history.csv (appended to when resuming)."""
    lower = [keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=0.5, patience=2, min_lr=min_lr)]
    return [
        BestCheckpoint(out / "best.keras", monitor, mode, state),
        *(lower if plateau else []),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=resume)]


def load_best(out: Path, model: keras.Model, jit_compile: str | None = None) -> keras.Model:
    """The run's best.keras (uncompiled; XLA per `jit_compile` if given), or `model` if none was saved."""
    if not (out / "best.keras").exists():
        return model
    best = keras.models.load_model(out / "best.keras", compile=False)
    if jit_compile is not None:
        best.jit_compile = use_jit(jit_compile)
    return best


def finish_run(out: Path, state: dict, metrics: dict[str, Any], tracker: Tracker, tracked: dict[str, float]) -> None:
    """Close a finished run: metrics.json, state.json marked finished, curves.png from
    history.csv; then `tracked` metrics (at the last epoch) and the folder's files to the tracker."""
    state["finished"] = True
    write_json(out / "metrics.json", metrics)
    write_json(out / "state.json", state)
    training_curves(out / "history.csv", out / "curves.png")
    tracker.log_metrics(tracked, step=metrics["epochs_run"])
    tracker.log_artifacts(out)


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


def load_run(run_dir: str | Path, which: str = "best", float32: bool = True,
             input_size: Sequence[int] | None = None) -> Run:
    """Load `<run_dir>/<which>.keras` with its config and metrics.

    With `input_size` (H, W) the model is rebuilt for that input (the same weights: every
    architecture here ends in global pooling) and the returned config says so.

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
    if input_size is not None and [int(v) for v in input_size] != [int(v) for v in config["input_size"]]:
        if "model" not in config:
            raise RunError(f"{d}: config.json has no model description to rebuild at another input size")
        size = [int(v) for v in input_size]
        config = {**config, "input_size": size, "model": {**config["model"], "input_size": size}}
        float32 = True
    if float32 and "model" in config:
        model = _rebuild_float32(model, config["model"])
    model.jit_compile = use_jit("auto")
    return Run(model=model, config=config, metrics=metrics, checkpoint=ckpt)


def _rebuild_float32(model: keras.Model, model_kwargs: dict[str, Any]) -> keras.Model:
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

    Drawn class-balanced from the test split (else the training split), rendered as the training
    pipeline and the runtime render a whole image.
    """
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
        out[k] = render_whole(np.asarray(sp.image(int(sel.indices[r]))), (h, w))
    return out
