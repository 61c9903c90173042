"""Train the Standard model and leave a self-contained run folder.

The folder's files are listed in `training.fit.run_folder`; a training run also
holds the report of its data set, data_report.md/.png.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from training.data.cache import load_split
from training.data.datasets import open_source
from training.data.labels import check_classes, select, split_train_val
from training.data.report import build_report, write_report
from training.data.tfdata import make_dataset, predict_arrays
from training.errors import DataError, RunError
from training.eval.metrics import score
from training.fit.run_folder import (
    RunState,
    finish_run,
    load_best,
    read_state,
    run_callbacks,
    run_tracker,
    write_json,
)
from training.fit.tracking import ending
from training.models.archs import ALL_ARCHS, TRAIN_PRECISIONS, default_lr
from training.models.factory import build_model, use_jit
from training.models.head import backbone_layers


@dataclass
class TrainConfig:
    """Everything needed to (re)run a training; saved as config.json."""

    data: str
    out: str
    arch: str = "convnext-edge"
    weights: str = "none"
    classes: list[str] | None = None
    negatives: bool = True
    input_size: list[int] = field(default_factory=lambda: [32, 32])
    epochs: int = 30
    batch_size: int = 128
    lr: float | None = None
    weight_decay: float = 1e-4
    precision: str = "float32"
    distribute: str = "none"
    mlflow_uri: str | None = None
    val_split: float = 0.1
    seed: int = 0
    limit: int | None = None
    head_width: int = 1024
    drop_path: float = 0.0
    dropout: float = 0.3
    width_scale: float = 1.0
    depths: list[int] | None = None
    mixup_alpha: float = 0.2
    freeze_backbone: bool = False
    schedule: str = "plateau"  # plateau: halve the rate after 2 flat epochs; cosine: warm-up, then cosine to 0
    warmup_epochs: float = 0.0
    patience: int = 5
    cache_dir: str | None = None
    jit_compile: str = "auto"
    verbose: int | str = "auto"

    def model_kwargs(self, num_classes: int) -> dict[str, Any]:
        """Arguments of `build_model` for this run (weights excluded)."""
        return {"arch": self.arch, "num_classes": num_classes, "input_size": list(self.input_size),
                "head_width": self.head_width, "drop_path": self.drop_path,
                "dropout": self.dropout, "width_scale": self.width_scale, "depths": self.depths}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        """Rebuild from a config.json dict (extra keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _strategy(kind: str) -> tf.distribute.Strategy:
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind != "mirrored":
        raise DataError(f"--distribute must be none or mirrored, not {kind!r}")
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=devices)


def _prepare_out(cfg: TrainConfig, resume: bool, epochs_given: bool) -> tuple[TrainConfig, dict]:
    out = Path(cfg.out).expanduser()
    if resume:
        if not (out / "config.json").exists() or not (out / "last.keras").exists():
            raise RunError(f"--resume: {out} has no config.json/last.keras to resume from")
        saved = TrainConfig.from_json(json.loads((out / "config.json").read_text()))
        saved.out = str(out)
        if epochs_given:
            saved.epochs = cfg.epochs
        state = read_state(out)
        if state.get("epoch", 0) >= saved.epochs:
            raise RunError(f"--resume: {out} already ran {state['epoch']} of {saved.epochs} "
                           "epochs; pass a larger --epochs to continue")
        return saved, state
    if (out / "state.json").exists():  # a folder that only got config/report is reused
        raise RunError(f"{out} already holds a run; use --resume or another --out")
    out.mkdir(parents=True, exist_ok=True)
    return cfg, {}


def adamw(lr: float, weight_decay: float) -> keras.optimizers.AdamW:
    """AdamW that leaves norms, biases and scales out of the weight decay."""
    opt = keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay)
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


class Schedule(Protocol):
    """What a learning-rate schedule is made of (a training's or an adaptation's config)."""

    lr: float
    epochs: int
    schedule: str
    warmup_epochs: float


def learning_rate(cfg: Schedule, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The rate AdamW follows: `cfg.lr` (plateau: lowered by a callback), or a linear warm-up
    over `warmup_epochs` to `cfg.lr` and then a cosine decay to 0 at the last epoch."""
    if cfg.schedule == "plateau":
        return cfg.lr
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    total = max(cfg.epochs * steps_per_epoch - warmup, 1)
    return keras.optimizers.schedules.CosineDecay(0.0 if warmup else cfg.lr, total, alpha=0.0,
                                                  warmup_target=cfg.lr if warmup else None, warmup_steps=warmup)


def compile_model(model: keras.Model, lr: float | keras.optimizers.schedules.LearningRateSchedule, n: int,
                  weight_decay: float = 1e-4, jit_compile: str = "auto") -> None:
    """Compile for multi-label training: AdamW (no decay on norms/biases/scales), BCE,
    binary accuracy and multi-label AUC."""
    model.compile(optimizer=adamw(lr, weight_decay), loss=keras.losses.BinaryCrossentropy(),
                  metrics=[keras.metrics.BinaryAccuracy(name="binary_accuracy"),
                           keras.metrics.AUC(multi_label=True, num_labels=n, name="auc")],
                  jit_compile=use_jit(jit_compile))


@dataclass
class _Data:
    """A training's images: the splits it reads and which of their images it fits, validates and tests on."""

    train_name: str
    test_name: str | None
    train_split: Any
    test_split: Any
    val_split: Any
    train_sel: Any
    val_sel: Any


def _resolve(cfg: TrainConfig, source: Any) -> list[str]:
    """Check the architecture and precision, and fill in the classes, rate and data path `cfg` leaves open."""
    if cfg.arch not in ALL_ARCHS:
        raise DataError(f"unknown --arch {cfg.arch!r} (choose from {', '.join(ALL_ARCHS)})")
    if cfg.precision not in TRAIN_PRECISIONS:
        raise DataError(f"--precision must be one of {', '.join(TRAIN_PRECISIONS)}")
    cfg.classes = check_classes(cfg.classes, source.classes) if cfg.classes else list(source.classes)
    cfg.lr = float(cfg.lr if cfg.lr is not None else default_lr(cfg.arch, cfg.weights))
    cfg.data = str(Path(cfg.data).expanduser().resolve())
    return cfg.classes


def _data(cfg: TrainConfig, source: Any, cache_root: Path | None, classes: list[str], out: Path,
          resume: bool) -> _Data:
    """Load the splits (train; test and val when the set has them), write the data report of a new run,
    and select the images: a val split's, or `val_split` of the training images."""
    train_name = "train" if "train" in source.splits else source.splits[0]
    test_name = "test" if "test" in source.splits and train_name != "test" else None
    keras.utils.set_random_seed(cfg.seed)
    train_split = load_split(source, train_name, cache_root)
    test_split = load_split(source, test_name, cache_root) if test_name else None
    if not resume:
        write_report(build_report(source, cache_root, progress=False), out)
    pool = select(train_split.labels, train_split.classes, classes, cfg.negatives, cfg.limit, cfg.seed)
    if "val" in source.splits:
        val_split = load_split(source, "val", cache_root)
        train_sel = pool
        val_sel = select(val_split.labels, val_split.classes, classes, cfg.negatives)
    else:
        val_split = train_split
        train_sel, val_sel = split_train_val(pool, cfg.val_split, cfg.seed)
    if len(train_sel) == 0:
        raise DataError(f"no training images for classes {classes} in {cfg.data}")
    return _Data(train_name, test_name, train_split, test_split, val_split, train_sel, val_sel)


def _datasets(cfg: TrainConfig, data: _Data, replicas: int) -> tuple[Any, Any]:
    """The training and validation tf.data pipelines (validation: None without images)."""
    if cfg.batch_size % replicas:
        raise DataError(f"--batch-size {cfg.batch_size} must be a multiple of the "
                        f"{replicas} replicas")
    if replicas > 1:
        # uneven per-replica shares of a partial batch fail in TF (empty share on
        # CPU, AddN shape mismatch in evaluation): drop the training remainder and
        # trim validation to a multiple of the replica count
        data.val_sel = data.val_sel.take(np.arange(len(data.val_sel) - len(data.val_sel) % replicas))
    size = tuple(cfg.input_size)
    drop_train = replicas > 1 and len(data.train_sel) >= cfg.batch_size
    train_ds = make_dataset(data.train_split, data.train_sel, size, cfg.batch_size, training=True,
                            mixup_alpha=cfg.mixup_alpha, seed=cfg.seed, drop_remainder=drop_train)
    val_ds = make_dataset(data.val_split, data.val_sel, size, cfg.batch_size) if len(data.val_sel) else None
    return train_ds, val_ds


def _model(cfg: TrainConfig, out: Path, resume: bool, n_classes: int, n_train: int) -> keras.Model:
    """The model to fit: last.keras when resuming, else a new one, compiled (call in the strategy's scope)."""
    if resume:
        model = keras.models.load_model(out / "last.keras")
        model.jit_compile = use_jit(cfg.jit_compile)
        return model
    model = build_model(weights=cfg.weights, **cfg.model_kwargs(n_classes))
    if cfg.freeze_backbone:  # transfer learning, first step: train the head only
        for layer in backbone_layers(model):
            layer.trainable = False
    steps = math.ceil(n_train / cfg.batch_size)
    compile_model(model, learning_rate(cfg, steps), n_classes, cfg.weight_decay, cfg.jit_compile)
    return model


def _test(cfg: TrainConfig, best: keras.Model, data: _Data, classes: list[str]) -> tuple[dict, str, int]:
    """Scores of the best model on the test split (the validation images without one): (scores, source, n)."""
    if data.test_split is not None:
        test_sel = select(data.test_split.labels, data.test_split.classes, classes, cfg.negatives)
        eval_split, test_source = data.test_split, "test"
    else:
        test_sel, eval_split, test_source = data.val_sel, data.val_split, "val"
    probs = predict_arrays(best, eval_split, test_sel, tuple(cfg.input_size), cfg.batch_size)
    return score(test_sel.targets, probs, test_sel.known), test_source, len(test_sel)


def run_training(cfg: TrainConfig, resume: bool = False, epochs_given: bool = True) -> dict:
    """Train per `cfg` into the run folder `cfg.out`; return the metrics dict."""
    t_start = time.perf_counter()
    cfg, state = _prepare_out(cfg, resume, epochs_given)
    out = Path(cfg.out).expanduser()
    cache_root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None
    source = open_source(cfg.data, cache_root)
    classes = _resolve(cfg, source)
    data = _data(cfg, source, cache_root, classes, out, resume)
    old_policy = keras.mixed_precision.global_policy()
    strategy = _strategy(cfg.distribute)
    replicas = strategy.num_replicas_in_sync
    train_ds, val_ds = _datasets(cfg, data, replicas)
    monitor = "val_loss" if val_ds is not None else "loss"
    config = {**asdict(cfg), "input_size": list(cfg.input_size), "classes": classes,
              "model": cfg.model_kwargs(len(classes)), "source_kind": source.kind,
              "train_split": data.train_name, "test_split": data.test_name,
              "n_train": len(data.train_sel), "n_val": len(data.val_sel),
              "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                           "python": sys.version.split()[0]},
              "created": state.get("created") or datetime.now(UTC).isoformat(timespec="seconds")}
    state.setdefault("created", config["created"])
    write_json(out / "config.json", config)
    tracker = run_tracker(cfg.mlflow_uri, out, state,
                          None if resume else {k: v for k, v in config.items() if k not in ("versions",)})
    keras.mixed_precision.set_global_policy(cfg.precision)
    try:
        with ending(tracker):
            with strategy.scope():
                model = _model(cfg, out, resume, len(classes), len(data.train_sel))
            run_state = RunState(out, state, len(data.train_sel), t_start)
            callbacks = [*run_callbacks(out, monitor, state, cfg.patience, 1e-6, resume,
                                        plateau=cfg.schedule == "plateau"), run_state, tracker.callback()]
            model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=int(state.get("epoch", 0)),
                      callbacks=callbacks, verbose=cfg.verbose, shuffle=False)
            test, test_source, n_test = _test(cfg, load_best(out, model, cfg.jit_compile), data, classes)
            run_state.add_wall()  # the evaluation after the last epoch
            metrics = {"test": test, "test_source": test_source, "epochs_run": state.get("epoch", 0),
                       "best_epoch": state.get("best_epoch"), "best_" + monitor: state.get("best"),
                       "wall_time_s": round(state["wall_s"], 2), "train_time_s": round(state.get("train_s", 0.0), 2),
                       "images_per_s": round(state.get("images", 0) / max(state.get("train_s", 0.0), 1e-9), 1),
                       "n_train": len(data.train_sel), "n_val": len(data.val_sel), "n_test": n_test,
                       "precision": cfg.precision, "distribute": cfg.distribute, "replicas": replicas}
            finish_run(out, state, metrics, tracker, {**{f"test_{k}": v for k, v in test.items()},
                                                      "images_per_s": metrics["images_per_s"],
                                                      "wall_time_s": metrics["wall_time_s"]})
            return metrics
    finally:
        keras.mixed_precision.set_global_policy(old_policy)
