"""`sixview openworld`: the open-world head of an HD model, end to end, in a run folder.

1. splits (`splits.json`): the HD adaptation's own, reproduced and checked against the
   held-out photos its calibration names, then every new set split after them;
2. evidence (`evidence-<hd hash>/`): per view, HD features and logits, teacher probabilities;
3. the head (`head.json`): the HD head's hidden units that pay for the head's multiply-adds chosen
   (`prune.pay`, the cached logits corrected to the pruned graph's), then the distilled other-mass
   logit and per-class gate fitted on fit parts; a quick held-out check of the model before and after;
4. `onnx/hd.onnx`, `onnx/hd.fp16.onnx`: the HD graph pruned, with the head folded in, thresholds reset
   (then `sixview eval RUN/onnx --heldout-of RUN --calibrate --fit-merge` chooses them).

With `one_pass` (a grid), the HD graph is first rewritten to see each frame once (`convert.onepass`,
`onepass/hd.onnx`), and the head is fitted on that graph's window features and grafted onto it; with
`distill_epochs`, its backbone is first trained for that pass (`distill.distil`, `distill/`). With
`tune`, the HD head itself is first fine-tuned on the evidence (`tune.tune_head`, `tuned/hd.onnx`).

Steps 1-2 are cached in the folder, so an interrupted run redoes only what it had not finished.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from convert.macs import graph_macs
from convert.metadata import read_meta
from convert.onepass import STRIDE, write_one_pass
from edge.atomic import atomic_write
from training.openworld import check
from training.openworld.distill import distil, distil_rows
from training.openworld.extract import SetEvidence, evidence, file_hash
from training.openworld.graft import graft, write_models
from training.openworld.head import OpenHead, fit_gate, fit_other
from training.openworld.plan import SetPlan, parts
from training.openworld.prune import pay
from training.openworld.splits import check_reproduced, heldout_digests, make_splits, write_splits
from training.openworld.synsets import other_mask, other_mass
from training.openworld.tune import tune_head

TEACHER = "efficientnet-lite2"


def _stack(evs: list[SetEvidence], held: list[np.ndarray], part: bool) -> dict[str, np.ndarray]:
    """The views of every set's fit (part False) or held-out (True) photos, flattened to rows."""
    keep = [h == part for h in held]
    cat = {k: np.concatenate([getattr(e, k)[m] for e, m in zip(evs, keep, strict=True)])
           for k in ("targets", "features", "logits", "teacher")}
    cat["set"] = np.concatenate([np.full(m.sum(), i) for i, m in enumerate(keep)])
    return cat


# The head and its parts alone (what each adds, in head.json): the distilled other logit, the features'
# weights (hard negatives), or both (the head that is grafted)
VARIANTS = {"teacher only": (True, False), "hard negatives only": (False, True), "both": (True, True)}


def fit_head(fit: dict[str, np.ndarray], classes: list[str], l2_other: float, l2_gate: float,
             use: tuple[bool, bool] = (True, True)) -> OpenHead:
    """The head from the fit parts' views (teacher rows for the distillation, all rows for the gate); `use`
    says whether the gate sees the distilled other logit and the features."""
    f = fit["features"].reshape(-1, fit["features"].shape[-1])
    t = fit["teacher"].reshape(-1, 1000)
    taught = ~np.isnan(t[:, 0])
    w, b = fit_other(f[taught], other_mass(t[taught], classes), l2_other)
    if not use[0]:
        w, b = np.zeros_like(w), 0.0
    other = f.astype(np.float64) @ w + b
    z = fit["logits"].reshape(-1, len(classes))
    targets = fit["targets"].reshape(-1, len(classes))
    sets = np.repeat(fit["set"], fit["logits"].shape[1])
    a, bb, d, u = fit_gate(z, other, f if use[1] else f[:, :0], targets, sets, l2_gate)
    return OpenHead(w, b, a, bb, d, u if use[1] else np.zeros((f.shape[1], len(classes))))


def held_check(held: dict[str, np.ndarray], head: OpenHead, names: list[str],
               original: np.ndarray) -> dict[str, Any]:
    """Per set, the quick check's figures before (`original`: the HD logits before pruning moved them) and
    after the head (held-out photos; thresholds of best F1 over all sets' held-out photos, chosen for each
    model)."""
    z, f, y = held["logits"], held["features"], held["targets"][:, 0]
    scores = {"before": check.photo_scores(original),
              "after": check.photo_scores(head.logits(z, f))}
    thr = {k: check.thresholds(s, y) for k, s in scores.items()}
    return {name: {k: check.figures(s[held["set"] == i], y[held["set"] == i], thr[k]) for k, s in scores.items()}
            for i, name in enumerate(names)}


def _change(after: np.ndarray, before: np.ndarray) -> dict[str, float]:
    """How far pruning moved the held-out views' HD logits (mean and largest absolute change)."""
    d = np.abs(after - before)
    return {"mean": round(float(d.mean()), 5), "max": round(float(d.max()), 4)}


def _distilled(hd_onnx: Path, meta, plans: list[SetPlan], chosen: dict, held: list[np.ndarray], out: Path,
               grid: int, epochs: int, cache: Path | None) -> tuple[Path, dict[str, Any]]:
    """The per-view graph with the kernels of its backbone distilled for one pass (`distill.distil`)."""
    classes = list(meta.classes)
    evs = evidence(chosen, hd_onnx, classes, out, TEACHER, meta.input_size[0], cache)
    fit, held_rows = distil_rows([p.path for p in plans], [chosen[p.path][0] for p in plans], evs, held,
                                 grid * STRIDE, classes, cache)
    return distil(hd_onnx, fit, held_rows, out / "distill", meta.provenance.get("arch", TEACHER), grid,
                  meta.view_fraction, epochs)


def run_open(hd_onnx: Path, plans: list[SetPlan], out: Path, teach_every: int = 3, l2_other: float = 1.0,
             l2_gate: float = 3e-3, cache: Path | None = None, one_pass: int | None = None,
             tune: bool = False, distill_epochs: int = 0) -> dict[str, Any]:
    """Fit the head for `hd_onnx` on `plans` (the HD adaptation's sets first, in its order) into `out`."""
    meta = read_meta(onnx.load(str(hd_onnx), load_external_data=False), str(hd_onnx))
    splits = make_splits([(p.path, p.holdout, p.report) for p in plans], cache=cache)
    check_reproduced(splits, heldout_digests(meta.provenance))
    write_splits(splits, out)
    chosen, held_masks = parts(plans, splits, teach_every, cache=cache)
    view_size = meta.input_size[0]  # the teacher sees the views at the per-view model's size
    held = [held_masks[p.path] for p in plans]
    source, distilled = hd_onnx, None
    if one_pass and distill_epochs:
        source, distilled = _distilled(hd_onnx, meta, plans, chosen, held, out, one_pass, distill_epochs, cache)
    graph = write_one_pass(source, one_pass, out / "onepass")[0] if one_pass else hd_onnx
    evs = evidence(chosen, graph, list(meta.classes), out, TEACHER, view_size, cache)
    tuned = None
    if tune:  # the head fine-tuned on the fit parts' views, stopped on the held-out ones', then the gate on it
        tuned, logits = tune_head(graph, _stack(evs, held, False), _stack(evs, held, True), out / "tuned" / "hd.onnx")
        graph = out / "tuned" / "hd.onnx"
        for e in evs:
            e.logits = logits(e.features.reshape(-1, e.features.shape[-1])).reshape(e.logits.shape)
    model, width = onnx.load(str(graph)), evs[0].features.shape[-1]
    original = np.concatenate([e.logits[m] for e, m in zip(evs, held, strict=True)])  # held-out, before pruning
    pruned = pay(model, evs, held, width * len(meta.classes))
    fit, names = _stack(evs, held, False), [Path(p.path).name for p in plans]
    heads = {k: fit_head(fit, list(meta.classes), l2_other, l2_gate, use) for k, use in VARIANTS.items()}
    head, held_views = heads["both"], _stack(evs, held, True)
    report = {"hd": str(hd_onnx), "hd_sha256_12": file_hash(hd_onnx), "one_pass_grid": one_pass,
              "distilled": distilled and {k: distilled[k] for k in ("held", "best_epoch", "epochs", "lr")},
              "tuned_head": tuned,
              "teacher": f"{TEACHER} ImageNet-1k",
              "other_synsets": int(other_mask(list(meta.classes)).sum()),
              "pruned_units": pruned and pruned[1].tolist(),
              "held_logit_change": _change(held_views["logits"], original),
              "sets": [str(Path(p.path).resolve()) for p in plans], "l2_other": l2_other, "l2_gate": l2_gate,
              "teach_every": teach_every,
              "gate": {c: {"a": round(float(head.a[k]), 4), "b": round(float(head.b[k]), 4),
                           "d": round(float(head.d[k]), 4)} for k, c in enumerate(meta.classes)},
              "heldout_check": {k: held_check(held_views, h, names, original) for k, h in heads.items()}}
    grafted = graft(model, head, pruned)
    report["macs_per_view"] = graph_macs(grafted) - graph_macs(model)
    prov = {k: report[k] for k in ("teacher", "other_synsets", "macs_per_view", "sets", "gate")}
    write_models(read_meta(model, str(graph)), grafted, {**prov, "fitted_on": "fit parts of splits.json"},
                 out / "onnx")  # the metadata of the graph grafted (a one-pass one's differs from hd_onnx's)
    with atomic_write(out / "head.json") as fh:
        fh.write(json.dumps({**report, "other_w": head.other_w.tolist(), "other_b": head.other_b}, indent=1))
    for f in hd_onnx.parent.glob("standard*.onnx"):  # the Standard model is unchanged: the pair stays whole
        shutil.copy2(f, out / "onnx" / f.name)
    return report
