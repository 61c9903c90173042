"""Fine-tune a Standard run on real photos into the HD model.

The set's classes are aligned to the model's by name; model classes the set
does not label are masked out of the loss (not negatives). Every epoch the
six-view mAP on the validation photos is measured exactly as the runtime
computes it, and the best epoch is kept. Before/after figures on the photos and
on the CIFAR-10 test split (forgetting) go into the run folder.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from edge.metadata import DEFAULT_THRESHOLD  # noqa: E402
from training.data.boxes import read_boxes  # noqa: E402
from training.data.cache import load_split  # noqa: E402
from training.data.datasets import norm_class, open_source  # noqa: E402
from training.data.labels import align_labels, select  # noqa: E402
from training.data.photos import UNKNOWN, PhotoCrops, masked_bce, six_views  # noqa: E402
from training.data.tfdata import predict_arrays  # noqa: E402
from training.errors import DataError, RunError  # noqa: E402
from training.eval import metrics as M  # noqa: E402
from training.fit.run_folder import (  # noqa: E402
    RunState,
    finish_run,
    load_best,
    load_run,
    read_state,
    run_callbacks,
    run_tracker,
    write_json,
)
from training.fit.tracking import ending  # noqa: E402
from training.fit.train import adamw  # noqa: E402
from training.models.efficientnet_lite import lite0_stage  # noqa: E402

HD_THRESHOLD = DEFAULT_THRESHOLD["hd"]  # the before/after F1 is measured at the HD model's default


@dataclass
class AdaptConfig:
    """Everything needed to (re)run an adaptation; saved in config.json under 'adapt'."""

    base: str
    data: str
    val: str
    out: str
    lr: float = 1e-5
    epochs: int = 15
    batch_size: int = 32
    weight_decay: float = 1e-4
    freeze_stages: int = 0
    distill_unlabelled: bool = True
    ignore_classes: list[str] = field(default_factory=list)
    unlabelled_classes: list[str] | None = None
    patience: int = 5
    seed: int = 0
    cifar: str | None = None  # forgetting check; default: the base run's data
    mlflow_uri: str | None = None
    cache_dir: str | None = None
    verbose: int | str = "auto"


def photo_targets(source_classes: list[str], labels: np.ndarray, model_classes: list[str],
                  ignore: list[str], unlabelled: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """Model-ordered targets for a photo set, with UNKNOWN where the set does not label a class.

    A set class the model lacks is an error unless `ignore` names it; `unlabelled`
    (if given) replaces the set's declared vocabulary as the list of masked classes.
    """
    model = [norm_class(c) for c in model_classes]
    extra = [c for c in source_classes if norm_class(c) not in model and norm_class(c) not in ignore]
    if extra:
        raise DataError(f"the set labels classes the model lacks: {', '.join(extra)} "
                        "(pass --ignore-class NAME to drop them)")
    keep = [i for i, c in enumerate(source_classes) if norm_class(c) in model]
    targets, known = align_labels(labels[:, keep], model_classes, [source_classes[i] for i in keep])
    if unlabelled is not None:
        known = np.array([c not in unlabelled for c in model])
    targets[:, ~known] = UNKNOWN
    return targets, known


class SixViewMAP(keras.callbacks.Callback):
    """Adds `val_map` (six views, max-merged) and `val_map_whole` to each epoch's logs."""

    def __init__(self, views: np.ndarray, targets: np.ndarray, known: np.ndarray, batch: int = 64):
        super().__init__()
        self.views, self.y, self.known, self.batch = views, targets[:, known], known, batch

    def scores(self, model: keras.Model) -> np.ndarray:
        """(N, 6, K) per-view scores."""
        n = len(self.views)
        flat = self.views.reshape(n * 6, *self.views.shape[2:]).astype(np.float32)
        s = model.predict(flat, batch_size=self.batch * 6, verbose=0)
        return np.asarray(s, np.float32).reshape(n, 6, -1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        s = self.scores(self.model)[:, :, self.known]
        names = [str(k) for k in range(self.y.shape[1])]
        logs = logs if logs is not None else {}
        logs["val_map"] = M.mean_ap(M.per_class_ap(self.y, s.max(axis=1), names))
        logs["val_map_whole"] = M.mean_ap(M.per_class_ap(self.y, s[:, 0], names))


def photo_report(model: keras.Model, cb: SixViewMAP, classes: list[str], thresholds: float) -> dict[str, Any]:
    """mAP (six views / whole), per-class AP and F1 at `thresholds` on the validation photos."""
    s = cb.scores(model)[:, :, cb.known]
    names = [c for c, k in zip(classes, cb.known, strict=True) if k]
    out = {}
    for tiling, sc in (("on", s.max(axis=1)), ("off", s[:, 0])):
        ap = M.per_class_ap(cb.y, sc, names)
        prf = M.prf_at(cb.y, (sc >= thresholds).astype(int), names)
        out[f"tiling_{tiling}"] = {"mAP": M.mean_ap(ap), "ap": ap, "micro_f1": prf["micro"]["f1"],
                                   "f1": {c: prf[c]["f1"] for c in names}}
    return out


def _is_early(name: str, stages: int) -> bool:
    if name.startswith("lite0"):
        stage = lite0_stage(name)
        return stage is not None and stage < stages - 1
    early = range(stages - 1)
    prefixes = ["stem", *(f"stage_{i}_" for i in early), *(f"downsampling_conv_{i}" for i in early),
                *(f"downsampling_layernorm_{i}" for i in early)]
    return any(p in name for p in prefixes)


def _freeze(model: keras.Model, stages: int) -> int:
    """Freeze the stem and the first `stages - 1` backbone stages (ConvNeXt: 4 stages,
    EfficientNet-Lite0: 7), and every batch norm (its statistics and scales stay as
    trained: batches of 32 crops are too small to re-estimate them); return how many layers."""
    frozen = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) or (stages > 0 and _is_early(layer.name, stages)):
            layer.trainable = False
            frozen += 1
    return frozen


def run_adapt(cfg: AdaptConfig, resume: bool = False) -> dict[str, Any]:
    """Fine-tune `cfg.base` on `cfg.data`, select on `cfg.val`; write the run folder; return metrics."""
    t_start = time.perf_counter()
    out = Path(cfg.out).expanduser()
    if (out / "config.json").exists() and not resume:
        raise RunError(f"{out} already holds a run; use --resume or another --out")
    if resume and not (out / "last.keras").exists():
        raise RunError(f"--resume: {out} has no last.keras to resume from")
    out.mkdir(parents=True, exist_ok=True)
    base = load_run(cfg.base)
    classes, size = base.classes, base.input_size
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None
    ignore = [norm_class(c) for c in cfg.ignore_classes]
    unl = [norm_class(c) for c in cfg.unlabelled_classes] if cfg.unlabelled_classes is not None else None

    def photos(path: str):
        src = open_source(path, cache)
        split = load_split(src, src.splits[0], cache)
        targets, known = photo_targets(split.classes, split.labels, classes, ignore, unl)
        return src, split, targets, known

    tsrc, tsplit, ttargets, known = photos(cfg.data)
    vsrc, vsplit, vtargets, vknown = photos(cfg.val)
    if not known.any():
        raise DataError(f"{cfg.data} labels none of the model's classes ({', '.join(classes)})")
    keras.utils.set_random_seed(cfg.seed)
    boxes = read_boxes(Path(tsrc.path), tsplit.ids, classes)
    # classes the set does not label: distilled from the base model (or left masked)
    teacher = base.model if cfg.distill_unlabelled else None
    train = PhotoCrops(tsplit, np.arange(len(tsplit)), ttargets, boxes, size, cfg.batch_size, seed=cfg.seed,
                       teacher=teacher, unlabelled=~known)
    vrows = np.arange(len(vsplit))
    val_views = six_views(vsplit, vrows, size)
    val_whole = (val_views[:, 0].astype(np.float32), vtargets)
    cb_map = SixViewMAP(val_views, vtargets, vknown)

    config = {**base.config, "adapt": asdict(cfg), "role": "hd", "base_run": str(Path(cfg.base).resolve()),
              "data": str(Path(cfg.data).resolve()), "val": str(Path(cfg.val).resolve()),
              "train_split": tsplit.name, "test_split": None,  # sample_images draws photos from `data`
              "known_classes": [c for c, k in zip(classes, known, strict=True) if k],
              "epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size,
              "n_train": len(tsplit), "n_val": len(vsplit),
              "created": datetime.now(UTC).isoformat(timespec="seconds"),
              "base_config_data": base.config.get("data")}
    state = read_state(out) if resume else {}
    write_json(out / "config.json", config)
    tracker = run_tracker(cfg.mlflow_uri, out, state, None if resume else asdict(cfg))

    metrics: dict[str, Any] = {"before": {"photos": photo_report(base.model, cb_map, classes, HD_THRESHOLD)}}
    with ending(tracker):
        if resume:
            model = keras.models.load_model(out / "last.keras", custom_objects={"masked_bce": masked_bce})
        else:
            model = load_run(cfg.base).model  # a fresh copy to fine-tune
            frozen = _freeze(model, cfg.freeze_stages)
            state["frozen_layers"] = frozen
            model.compile(optimizer=adamw(cfg.lr, cfg.weight_decay), loss=masked_bce)
        run_state = RunState(out, state, "val_loss")
        callbacks = [
            cb_map,  # first: the others read val_map from the logs
            *run_callbacks(out, "val_map", state.get("best_map"), cfg.patience, 1e-7, resume, mode="max"),
            keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: state.update(
                best_map=max(state.get("best_map") or -1.0, logs["val_map"]))),
            run_state, tracker.callback()]  # run_state saves state.json, after best_map is updated
        model.fit(train, validation_data=val_whole, epochs=cfg.epochs, initial_epoch=int(state.get("epoch", 0)),
                  callbacks=callbacks, verbose=cfg.verbose)
        best = load_best(out, model)
        metrics["after"] = {"photos": photo_report(best, cb_map, classes, HD_THRESHOLD)}
        cifar = cfg.cifar or base.config.get("data")
        if cifar and Path(cifar).exists():
            csrc = open_source(cifar, cache)
            if "test" in csrc.splits:
                csplit = load_split(csrc, "test", cache)
                sel = select(csplit.labels, csplit.classes, classes, negatives=True)
                for when, m in (("before", base.model), ("after", best)):
                    metrics[when]["cifar10_test"] = M.score(sel.targets, predict_arrays(m, csplit, sel, size),
                                                            sel.known)
        hist = (out / "history.csv").read_text().splitlines()
        state["wall_s"] = state.get("wall_s", 0.0) + time.perf_counter() - t_start
        metrics.update(
            test=metrics["after"].get("cifar10_test", {}),
            val_map_before=metrics["before"]["photos"]["tiling_on"]["mAP"],
            val_map_after=metrics["after"]["photos"]["tiling_on"]["mAP"], epochs_run=len(hist) - 1,
            wall_time_s=round(state["wall_s"], 1), n_train=len(tsplit), n_val=len(vsplit))
        (out / "report.md").write_text(adapt_report(metrics, config))
        finish_run(out, state, metrics, tracker,
                   {"val_map_before": metrics["val_map_before"], "val_map_after": metrics["val_map_after"]})
        return metrics


def adapt_report(metrics: dict[str, Any], config: dict[str, Any]) -> str:
    """Markdown: before/after on the validation photos and on CIFAR-10 test."""
    b, a = metrics["before"], metrics["after"]
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    lines = [f"# Adaptation: {config['base_run']} -> HD", "",
             f"train: {config['data']} ({config['n_train']} photos); val: {config['val']} ({config['n_val']}); "
             f"masked classes: {', '.join(c for c in config['classes'] if c not in config['known_classes']) or 'none'}",
             "", "| measure | before (Standard) | after (HD) |", "| --- | --- | --- |"]
    for t in ("on", "off"):
        lines.append(f"| val mAP, tiling {t} | {pct(b['photos'][f'tiling_{t}']['mAP'])} "
                     f"| {pct(a['photos'][f'tiling_{t}']['mAP'])} |")
    lines.append(f"| val micro F1 @{HD_THRESHOLD:.2f}, tiling on | {pct(b['photos']['tiling_on']['micro_f1'])} "
                 f"| {pct(a['photos']['tiling_on']['micro_f1'])} |")
    if "cifar10_test" in a:
        for k in ("top1", "auc"):
            lines.append(f"| CIFAR-10 test {k} | {pct(b['cifar10_test'][k])} | {pct(a['cifar10_test'][k])} |")
    lines += ["", "| class | AP before | AP after |", "| --- | --- | --- |"]
    for c, v in a["photos"]["tiling_on"]["ap"].items():
        lines.append(f"| {c} | {pct(b['photos']['tiling_on']['ap'][c])} | {pct(v)} |")
    return "\n".join(lines) + "\n"

