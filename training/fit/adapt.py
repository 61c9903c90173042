"""Fine-tune a Standard run on real photos into the HD model.

Several photo sets can be used at once. Each set's classes (its `classes.txt`)
are aligned to the model's by name; a model class a set does not label is
unknown for that set's photos: distilled from the Standard model (or masked),
never a negative. A photo with none of its set's classes is a negative for all
of them (how the model learns "none of these"). Sampling is balanced: every set
gets the same share of each epoch, and within a set rare classes are drawn more.

The HD model may take a larger input than the Standard run (`input_size`: the
same weights, rebuilt; real photos have detail that CIFAR's 32-pixel images lack).
With `replay`, a sample of the base run's CIFAR-10 training images joins the
sets as one more (all ten classes known, nothing held out): the model keeps
seeing what it learned first, which limits forgetting.

Part of every set (`holdout`) is held out and never trained on; every epoch the
six-view mAP on those photos is measured exactly as the runtime computes it,
and the best epoch is kept. A further part (`report`, default none) is set
aside: never fitted, never used to choose the epoch or (by `sixview eval`) to
calibrate; it is only for reporting (`sixview eval --report-of RUN`), so
per-set figures can come from photos that chose nothing. `splits.json` lists
which photos were fitted, which held out (they choose the epoch and may
calibrate thresholds: `sixview eval --heldout-of RUN --calibrate`) and which
set aside for reporting. With `init_from` an adaptation continues another
one (its best weights, e.g. for more epochs or at a larger input) on exactly
the same splits: a run that split its photos otherwise is refused.
Before/after figures on the held-out photos and on the CIFAR-10 test split
(forgetting) go into the run folder.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training.data.boxes import read_boxes
from training.data.cache import load_split
from training.data.datasets import norm_class, open_source
from training.data.photos import UNKNOWN, PhotoCrops, masked_bce, six_views
from training.errors import DataError, RunError
from training.fit.heldout import HD_THRESHOLD, SixViewMAP, adapt_report, cifar_forgetting, photo_report
from training.fit.photo_sets import (
    PhotoSet,
    balance_weights,
    check_same_splits,
    photo_targets,
    split_indices,
    splits_json,
)
from training.fit.run_folder import (
    RunState,
    finish_run,
    load_best,
    load_run,
    read_state,
    run_callbacks,
    run_tracker,
    write_json,
)
from training.fit.tracking import ending
from training.fit.train import adamw, learning_rate
from training.models.efficientnet_lite import lite_stage


@dataclass
class AdaptConfig:
    """Everything needed to (re)run an adaptation; saved in config.json under 'adapt'."""

    base: str
    data: list[str]  # photo sets to adapt on
    out: str
    val: list[str] = field(default_factory=list)  # sets held out whole; default: `holdout` of each data set
    holdout: float = 0.2
    report: float = 0.0  # a further part of each data set, only for reporting (never fitted, chooses nothing)
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
    balance: bool = True  # equal share per set, rare classes drawn more
    negatives: bool = True  # fit photos with none of a set's classes (all-zero targets)
    replay: int = 0  # CIFAR-10 training images mixed in against forgetting (0: none)
    input_size: list[int] | None = None  # (H, W) to adapt at; default: the base run's
    schedule: str = "plateau"  # plateau: halve the rate after 2 flat epochs; cosine: warm-up, then cosine to 0
    warmup_epochs: float = 0.0
    init_from: str | None = None  # start from this adaptation run's best weights (same sets, same splits)
    verbose: int | str = "auto"

    def __post_init__(self) -> None:
        self.data = [self.data] if isinstance(self.data, str) else list(self.data)
        self.val = [self.val] if isinstance(self.val, str) else list(self.val or [])
        if not self.data:
            raise DataError("adaptation needs at least one photo set (--data)")
        if not self.val and not 0.0 < self.holdout < 1.0:
            raise DataError(f"--holdout must be in (0, 1) when no --val set is given, got {self.holdout}")
        if not 0.0 <= self.report < 1.0:
            raise DataError(f"--report must be in [0, 1), got {self.report}")
        if self.schedule not in ("plateau", "cosine"):
            raise DataError(f"unknown schedule {self.schedule!r} (plateau or cosine)")
        if not self.val and self.holdout + self.report >= 1.0:
            raise DataError(f"--holdout {self.holdout:g} and --report {self.report:g} leave no photo to fit: "
                            "together they must be under 1")


def replay_set(cifar: str | None, n: int, classes: list[str], cache: Path | None,
               rng: np.random.Generator) -> list[PhotoSet]:
    """`n` images drawn from the training split of `cifar` as one more set to fit (all its
    classes known, none held out, no boxes)."""
    if not cifar or not Path(cifar).exists():
        raise DataError(f"replay needs the CIFAR-10 set (--cifar), not found: {cifar}")
    src = open_source(cifar, cache)
    split = load_split(src, "train" if "train" in src.splits else src.splits[0], cache)
    targets, known = photo_targets(split.classes, split.labels, classes, [], None)
    pick = np.sort(rng.choice(len(split), min(n, len(split)), replace=False))
    return [PhotoSet(str(Path(cifar).resolve()), split, targets, known, [[] for _ in split.ids], pick,
                     np.array([], int))]


def _is_early(name: str, stages: int) -> bool:
    stage = lite_stage(name)  # None for any layer outside an EfficientNet-Lite backbone
    if stage is not None:
        return stage < stages - 1
    early = range(stages - 1)
    prefixes = ["stem", *(f"stage_{i}_" for i in early), *(f"downsampling_conv_{i}" for i in early),
                *(f"downsampling_layernorm_{i}" for i in early)]
    return any(p in name for p in prefixes)


def _freeze(model: keras.Model, stages: int) -> int:
    """Freeze the stem and the first `stages - 1` backbone stages (ConvNeXt: 4 stages,
    EfficientNet-Lite: 7), and every batch norm (its statistics and scales stay as
    trained: batches of 32 crops are too small to re-estimate them); return how many layers."""
    frozen = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) or (stages > 0 and _is_early(layer.name, stages)):
            layer.trainable = False
            frozen += 1
    return frozen


def _out_dir(cfg: AdaptConfig, resume: bool) -> Path:
    """The run folder, created; refused when it holds a run and `resume` is off, or has nothing to resume."""
    out = Path(cfg.out).expanduser()
    if (out / "state.json").exists() and not resume:  # a folder stopped before its first epoch is reused
        raise RunError(f"{out} already holds a run; use --resume or another --out")
    if resume and not (out / "last.keras").exists():
        raise RunError(f"--resume: {out} has no last.keras to resume from")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _photo_sets(cfg: AdaptConfig, classes: list[str], cache: Path | None,
                rng: np.random.Generator) -> list[PhotoSet]:
    """The --data sets (part of each held out, part set aside) and the --val sets (held out whole)."""
    ignore = [norm_class(c) for c in cfg.ignore_classes]
    unl = [norm_class(c) for c in cfg.unlabelled_classes] if cfg.unlabelled_classes is not None else None

    def photo_set(path: str, hold: float, report: float = 0.0) -> PhotoSet:
        src = open_source(path, cache)
        split = load_split(src, src.splits[0], cache)
        targets, known = photo_targets(split.classes, split.labels, classes, ignore, unl)
        fit, heldout, aside = split_indices(len(split), hold, report, rng)
        if not cfg.negatives:  # fit only photos showing one of the set's classes; the other parts stay
            fit = fit[(targets[fit] == 1).any(axis=1)]
        boxes = read_boxes(Path(src.path), split.ids, classes)
        return PhotoSet(str(Path(path).resolve()), split, targets, known, boxes, fit, heldout, aside)

    sets = [photo_set(p, 0.0 if cfg.val else cfg.holdout, cfg.report) for p in cfg.data]
    return sets + [photo_set(p, 1.0) for p in cfg.val]


@dataclass
class _Data:
    """What an adaptation fits and selects on: the fitted rows as (set, index), the held-out ones, the
    training crops, the held-out whole views (Keras' validation data) and the six-view mAP callback."""

    fitted: list[tuple[int, int]]
    held: list[tuple[int, int]]
    train: Any
    val_whole: tuple[np.ndarray, np.ndarray]
    cb_map: SixViewMAP


def _data(cfg: AdaptConfig, sets: list[PhotoSet], replayed: list[PhotoSet], base: Any,
          size: tuple[int, int]) -> _Data:
    fitting = sets + replayed  # the replayed set is fitted, never held out
    fitted = [(g, i) for g, ps in enumerate(fitting) for i in ps.fit]
    held = [(g, i) for g, ps in enumerate(sets) for i in ps.heldout]
    if not fitted or not held:
        raise DataError("adaptation needs photos to fit and photos held out for selection")
    keras.utils.set_random_seed(cfg.seed)
    fit_rows = np.array(fitted)
    fit_targets = np.stack([fitting[g].targets[i] for g, i in fitted])
    # classes a set does not label: distilled from the base model (or left masked)
    teacher = base.model if cfg.distill_unlabelled else None
    train = PhotoCrops([ps.split for ps in fitting], fit_rows, fit_targets, [ps.boxes for ps in fitting], size,
                       cfg.batch_size, seed=cfg.seed, teacher=teacher, unlabelled=fit_targets == UNKNOWN,
                       weights=balance_weights(fit_rows[:, 0], fit_targets) if cfg.balance else None)
    val_views = np.concatenate([six_views(ps.split, ps.heldout, size) for ps in sets if len(ps.heldout)])
    vtargets = np.concatenate([ps.targets[ps.heldout] for ps in sets if len(ps.heldout)])
    return _Data(fitted, held, train, (val_views[:, 0].astype(np.float32), vtargets), SixViewMAP(val_views, vtargets))


def _run_config(cfg: AdaptConfig, base: Any, sets: list[PhotoSet], replayed: list[PhotoSet],
                data: _Data) -> dict[str, Any]:
    """config.json of the adaptation run: the base run's, with what this run adapted on."""
    classes = base.classes
    return {**base.config, "adapt": asdict(cfg), "role": "hd", "base_run": str(Path(cfg.base).resolve()),
            "data": sets[0].path, "sets": [ps.path for ps in sets],
            "selection": "six-view mAP on the held-out photos of splits.json",
            "train_split": sets[0].split.name, "test_split": None,  # sample_images draws photos from `data`
            "known_classes": [c for c, k in zip(classes, data.cb_map.known, strict=True) if k],
            "known_by_set": {ps.path: [c for c, k in zip(classes, ps.known, strict=True) if k] for ps in sets},
            "epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size,
            "n_train": len(data.fitted), "n_val": len(data.held), "n_report": sum(len(ps.report) for ps in sets),
            "replay": {"set": replayed[0].path, "images": len(replayed[0].fit)} if replayed else None,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "base_config_data": base.config.get("data")}


def _fit(cfg: AdaptConfig, out: Path, data: _Data, state: dict[str, Any], resume: bool, size: tuple[int, int],
         tracker: Any, t_start: float) -> tuple[keras.Model, RunState]:
    """Compile (or resume) and fit the model; returns the best epoch's model and the run's state."""
    if resume:
        model = keras.models.load_model(out / "last.keras", custom_objects={"masked_bce": masked_bce})
    else:
        model = load_run(cfg.init_from or cfg.base, input_size=size).model  # a fresh copy to fine-tune
        state["frozen_layers"] = _freeze(model, cfg.freeze_stages)
        model.compile(optimizer=adamw(learning_rate(cfg, len(data.train)), cfg.weight_decay), loss=masked_bce)
    run_state = RunState(out, state, len(data.fitted), t_start)
    callbacks = [
        data.cb_map,  # first: the others read val_map from the logs
        *run_callbacks(out, "val_map", state, cfg.patience, 1e-7, resume, mode="max",
                       plateau=cfg.schedule == "plateau"),
        run_state, tracker.callback()]  # run_state saves state.json, after the checkpoint updates its best
    model.fit(data.train, validation_data=data.val_whole, epochs=cfg.epochs,
              initial_epoch=int(state.get("epoch", 0)), callbacks=callbacks, verbose=cfg.verbose)
    return load_best(out, model), run_state


def run_adapt(cfg: AdaptConfig, resume: bool = False) -> dict[str, Any]:
    """Fine-tune `cfg.base` (or the run `cfg.init_from`) on the photo sets, select on the held-out photos;
    write the run folder; return metrics."""
    t_start = time.perf_counter()
    out = _out_dir(cfg, resume)
    base = load_run(cfg.base, input_size=cfg.input_size)  # at the HD input size: the teacher sees the same crops
    classes, size = base.classes, base.input_size
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None
    rng = np.random.default_rng(cfg.seed)
    sets = _photo_sets(cfg, classes, cache, rng)
    cifar = cfg.cifar or base.config.get("data")
    replayed = replay_set(cifar, cfg.replay, classes, cache, rng) if cfg.replay else []
    if not any(ps.known.any() for ps in sets):
        raise DataError(f"{', '.join(cfg.data)}: no set labels any of the model's classes ({', '.join(classes)})")
    data = _data(cfg, sets, replayed, base, size)
    splits = splits_json(sets)
    if cfg.init_from:
        check_same_splits(Path(cfg.init_from).expanduser(), splits, classes)
    write_json(out / "splits.json", splits)
    config = _run_config(cfg, base, sets, replayed, data)
    state = read_state(out) if resume else {}
    write_json(out / "config.json", config)
    tracker = run_tracker(cfg.mlflow_uri, out, state, None if resume else asdict(cfg))

    metrics: dict[str, Any] = {"before": {"photos": photo_report(base.model, data.cb_map, classes, HD_THRESHOLD)}}
    with ending(tracker):
        best, run_state = _fit(cfg, out, data, state, resume, size, tracker, t_start)
        metrics["after"] = {"photos": photo_report(best, data.cb_map, classes, HD_THRESHOLD)}
        cifar_forgetting(metrics, cifar, cache, classes, {"before": base.model, "after": best}, size)
        hist = (out / "history.csv").read_text().splitlines()
        run_state.add_wall()  # the reports after the last epoch
        metrics.update(
            test=metrics["after"].get("cifar10_test", {}),
            val_map_before=metrics["before"]["photos"]["tiling_on"]["mAP"],
            val_map_after=metrics["after"]["photos"]["tiling_on"]["mAP"], epochs_run=len(hist) - 1,
            wall_time_s=round(state["wall_s"], 1), n_train=len(data.fitted), n_val=len(data.held))
        (out / "report.md").write_text(adapt_report(metrics, config))
        finish_run(out, state, metrics, tracker,
                   {"val_map_before": metrics["val_map_before"], "val_map_after": metrics["val_map_after"]})
        return metrics
