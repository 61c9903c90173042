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

import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from training.data.boxes import read_boxes  # noqa: E402
from training.data.cache import load_split  # noqa: E402
from training.data.datasets import norm_class, open_source  # noqa: E402
from training.data.labels import align_labels, select  # noqa: E402
from training.data.photos import UNKNOWN, PhotoCrops, masked_bce, six_views  # noqa: E402
from training.data.tfdata import predict_arrays  # noqa: E402
from training.errors import DataError, RunError  # noqa: E402
from training.eval import metrics as M  # noqa: E402
from training.fit.heldout import HD_THRESHOLD, SixViewMAP, adapt_report, photo_report  # noqa: E402
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
from training.fit.train import adamw, learning_rate  # noqa: E402
from training.models.efficientnet_lite import lite_stage  # noqa: E402


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


@dataclass
class PhotoSet:
    """One photo set: its decoded split, model-ordered targets (UNKNOWN where it does not label
    a class), boxes, and which of its photos are fitted, which held out (to choose the epoch) and
    which set aside for reporting only."""

    path: str
    split: Any
    targets: np.ndarray
    known: np.ndarray
    boxes: list
    fit: np.ndarray
    heldout: np.ndarray
    report: np.ndarray = field(default_factory=lambda: np.array([], int))


def split_indices(n: int, holdout: float, report: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit, heldout, report) row indices of a set of `n`, each sorted: one permutation, the first
    `holdout` of it held out, the next `report` set aside, the rest fitted (with report 0, the
    split every earlier run made)."""
    order = rng.permutation(n)
    n_held = round(n * holdout)
    n_report = min(round(n * report), n - n_held)
    return (np.sort(order[n_held + n_report:]), np.sort(order[:n_held]),
            np.sort(order[n_held:n_held + n_report]))


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


def balance_weights(sets: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Sampling weights: every set the same share; within a set, a photo's weight is
    1/sqrt(count) of its rarest class (or of the photos with none), so rare classes are
    drawn more without the common ones vanishing."""
    w = np.zeros(len(sets))
    groups = np.unique(sets)
    for g in groups:
        rows = sets == g
        pos = targets[rows] == 1.0
        none = ~pos.any(axis=1)
        inv = 1.0 / np.sqrt(np.maximum(pos.sum(axis=0), 1))
        rw = np.where(none, 1.0 / np.sqrt(max(int(none.sum()), 1)), (pos * inv).max(axis=1))
        w[rows] = rw / rw.sum() / len(groups)
    return w


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


def _check_init(run: Path, splits: dict[str, Any], classes: list[str]) -> None:
    """An adaptation continued from `run` must fit, hold out and set aside the same photos (else photos that
    chose its epoch, or are reported on, would now be fitted) and have the same classes."""
    if not (run / "splits.json").is_file():
        raise RunError(f"--init-from {run}: not an adaptation run (no splits.json)")
    if json.loads((run / "splits.json").read_text()) != splits:
        raise DataError(f"--init-from {run}: that run split its photos differently (other sets, --holdout, "
                        "--report or --seed); continuing it would fit photos it held out")
    theirs = json.loads((run / "config.json").read_text()).get("classes")
    if theirs != classes:
        raise DataError(f"--init-from {run}: its classes {theirs} are not the base run's {classes}")


def run_adapt(cfg: AdaptConfig, resume: bool = False) -> dict[str, Any]:
    """Fine-tune `cfg.base` (or the run `cfg.init_from`) on the photo sets, select on the held-out photos; write
    the run folder;
    return metrics."""
    t_start = time.perf_counter()
    out = Path(cfg.out).expanduser()
    if (out / "state.json").exists() and not resume:  # a folder stopped before its first epoch is reused
        raise RunError(f"{out} already holds a run; use --resume or another --out")
    if resume and not (out / "last.keras").exists():
        raise RunError(f"--resume: {out} has no last.keras to resume from")
    out.mkdir(parents=True, exist_ok=True)
    base = load_run(cfg.base, input_size=cfg.input_size)  # at the HD input size: the teacher sees the same crops
    classes, size = base.classes, base.input_size
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None
    ignore = [norm_class(c) for c in cfg.ignore_classes]
    unl = [norm_class(c) for c in cfg.unlabelled_classes] if cfg.unlabelled_classes is not None else None

    rng = np.random.default_rng(cfg.seed)

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
    sets += [photo_set(p, 1.0) for p in cfg.val]
    cifar = cfg.cifar or base.config.get("data")
    replayed = replay_set(cifar, cfg.replay, classes, cache, rng) if cfg.replay else []
    if not any(ps.known.any() for ps in sets):
        raise DataError(f"{', '.join(cfg.data)}: no set labels any of the model's classes ({', '.join(classes)})")
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
    val_whole = (val_views[:, 0].astype(np.float32), vtargets)
    cb_map = SixViewMAP(val_views, vtargets)
    splits = {"sets": {ps.path: {"fit": [ps.split.ids[i] for i in ps.fit],
                                 "heldout": [ps.split.ids[i] for i in ps.heldout],
                                 "report": [ps.split.ids[i] for i in ps.report]} for ps in sets}}
    if cfg.init_from:
        _check_init(Path(cfg.init_from).expanduser(), splits, classes)
    write_json(out / "splits.json", splits)
    n_report = sum(len(ps.report) for ps in sets)

    config = {**base.config, "adapt": asdict(cfg), "role": "hd", "base_run": str(Path(cfg.base).resolve()),
              "data": sets[0].path, "sets": [ps.path for ps in sets],
              "selection": "six-view mAP on the held-out photos of splits.json",
              "train_split": sets[0].split.name, "test_split": None,  # sample_images draws photos from `data`
              "known_classes": [c for c, k in zip(classes, cb_map.known, strict=True) if k],
              "known_by_set": {ps.path: [c for c, k in zip(classes, ps.known, strict=True) if k] for ps in sets},
              "epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size,
              "n_train": len(fitted), "n_val": len(held), "n_report": n_report,
              "replay": {"set": replayed[0].path, "images": len(replayed[0].fit)} if replayed else None,
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
            model = load_run(cfg.init_from or cfg.base, input_size=size).model  # a fresh copy to fine-tune
            frozen = _freeze(model, cfg.freeze_stages)
            state["frozen_layers"] = frozen
            model.compile(optimizer=adamw(learning_rate(cfg, len(train)), cfg.weight_decay), loss=masked_bce)
        run_state = RunState(out, state, len(fitted), t_start)
        callbacks = [
            cb_map,  # first: the others read val_map from the logs
            *run_callbacks(out, "val_map", state, cfg.patience, 1e-7, resume, mode="max",
                           plateau=cfg.schedule == "plateau"),
            run_state, tracker.callback()]  # run_state saves state.json, after the checkpoint updates its best
        model.fit(train, validation_data=val_whole, epochs=cfg.epochs, initial_epoch=int(state.get("epoch", 0)),
                  callbacks=callbacks, verbose=cfg.verbose)
        best = load_best(out, model)
        metrics["after"] = {"photos": photo_report(best, cb_map, classes, HD_THRESHOLD)}
        if cifar and Path(cifar).exists():
            csrc = open_source(cifar, cache)
            if "test" in csrc.splits:
                csplit = load_split(csrc, "test", cache)
                sel = select(csplit.labels, csplit.classes, classes, negatives=True)
                for when, m in (("before", base.model), ("after", best)):
                    metrics[when]["cifar10_test"] = M.score(sel.targets, predict_arrays(m, csplit, sel, size),
                                                            sel.known)
        hist = (out / "history.csv").read_text().splitlines()
        run_state.add_wall()  # the reports after the last epoch
        metrics.update(
            test=metrics["after"].get("cifar10_test", {}),
            val_map_before=metrics["before"]["photos"]["tiling_on"]["mAP"],
            val_map_after=metrics["after"]["photos"]["tiling_on"]["mAP"], epochs_run=len(hist) - 1,
            wall_time_s=round(state["wall_s"], 1), n_train=len(fitted), n_val=len(held))
        (out / "report.md").write_text(adapt_report(metrics, config))
        finish_run(out, state, metrics, tracker,
                   {"val_map_before": metrics["val_map_before"], "val_map_after": metrics["val_map_after"]})
        return metrics
