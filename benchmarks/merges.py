"""Is a view-aware merge better than the max over the six views? Fitted on one set, measured on another.

Every photo is seen as six views (whole image, four 60% corners, centre); the runtime's merged
score of a class is the max over the views' sigmoid scores (`edge/merge.py`). A corner upscaled
to the model input sees less context, and a max over six chances inflates the scores of photos
that hold none of the classes. This script fits a few cheap alternatives on a FIT set and
measures them on a disjoint TEST set (a photo in both is refused):

  max             (a) the max over the six views (today; nothing fitted)
  whole           reference: the whole view alone (tiling off; nothing fitted)
  platt_shared    (b) Platt scaling per view kind, shared by all classes: sigmoid(a_w*z_whole + b_w)
                      for the whole view, sigmoid(a_c*z + b_c) for each crop, then the max. The crop
                      map is fitted on the best crop's logit against the photo's labels (the level at
                      which it is used: for a_c > 0, max of mapped crops = map of the best crop)
  platt_class     (b) the same per class, for the classes with enough FIT positives and negatives
                      (--min-positives); the others keep the shared maps
  learned_shared  (c) logistic regression on [z_whole, max z_crops, mean z_crops], weights shared
                      by all classes, a per-class bias (classes without enough FIT data keep the
                      pooled bias)
  learned_class   (c) the same with all four parameters per class (fallback: the shared ones)
  top2_mean       (d) the mean of the two highest view scores (nothing fitted): a class must be
                      seen by two views, so one over-confident corner cannot label a photo alone
  logit_mean      (e) sigmoid of the mean of the six views' logits (nothing fitted): what the
                      learned weights look like on real photos, without fitting them

(z = logit of a view's score clipped to [1e-6, 1 - 1e-6], `edge.merge.logit`; `learned_shared` is
the runtime's `logit_linear` merge, fitted by `training.eval.merge_fit`.) Per merge, on the TEST
set: mAP (per class over the photos whose set labels that class), and at per-class thresholds
chosen by max F1 on the FIT set (classes without FIT positives: one threshold pooled over the
others), micro precision / recall / F1 of
the labels and the share of label-free test photos (no known class present) that get a label;
paired bootstrap intervals (over test photos) of each difference to `max`; the cost per image
of the merge itself (timeit, numpy on one (6, K) array). No presence threshold and no fallback
guess: the labels are the classes at or above their threshold.

Writes merges.json and merges.md to --out (default benchmarks/results/<machine>/). This only
measures; a model gets the learned merge from `sixview eval --calibrate --fit-merge`.

    python -m benchmarks.merges --fit ../shared/data/imagenette_train --fit ../shared/data/openimages_train \\
        --test ../shared/data/voc07_val --limit 1500
    python -m benchmarks.merges --fit-heldout-of runs/<backbone>/hd --test ../shared/data/voc07_val
    python -m benchmarks.merges --quick           # smoke run: toy colour model on synthetic photos
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks._cli import SetupError, add_models, add_out_quick, command_line, failed, log, parser
from benchmarks._common import out_dir, scratch_dir, toy_models, write_results, wrote
from benchmarks.merge_strategies import MERGES, bootstrap_deltas, choose_thresholds, merge_cost_us, merge_metrics
from benchmarks.merges_data import ROLE, load_sets, photo_keys, score_set, set_specs, synthetic_sets
from benchmarks.merges_report import markdown, pct, verdict
from edge.engine import Engine
from edge.errors import SETUP_ERRORS
from edge.merge import EPS
from edge.stats import machine_info
from edge.tiling import VIEW_NAMES
from training.eval.merge_fit import L2, MIN_POSITIVES, eligible

__all__ = ["ROLE", "load_sets", "main", "score_set", "set_specs", "synthetic_sets"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser("python -m benchmarks.merges", __doc__)
    add_models(p)
    p.add_argument("--fit", action="append", default=[], metavar="DATA",
                   help="a set to fit the merges and thresholds on (repeatable)")
    p.add_argument("--fit-heldout-of", default=None, metavar="RUN",
                   help="fit on the photos a run held out (an adaptation run's splits.json)")
    p.add_argument("--test", action="append", default=[], metavar="DATA", help="a set to measure on (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="at most N photos per FIT set (evenly spaced)")
    p.add_argument("--test-limit", type=int, default=None, help="at most N photos per TEST set")
    p.add_argument("--min-positives", type=int, default=MIN_POSITIVES,
                   help=f"FIT positives (and negatives) a class needs for its own parameters and threshold "
                        f"(default {MIN_POSITIVES})")
    p.add_argument("--bootstrap", type=int, default=500, help="paired bootstrap draws (default 500; 0: none)")
    p.add_argument("--batch", type=int, default=8, help="photos per model call (default 8)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's default)")
    p.add_argument("--scores-cache", type=Path, default=None,
                   help="folder for the view scores (reused when the model file and the photos are the same)")
    add_out_quick(p, "smoke run: toy colour model on synthetic photos")
    args = p.parse_args(argv)
    if args.quick:
        args.bootstrap = min(args.bootstrap, 20)
        args.min_positives = min(args.min_positives, 5)
    elif not (args.fit or args.fit_heldout_of) or not args.test:
        p.error("--fit DATA (or --fit-heldout-of RUN) and --test DATA are required (or --quick)")
    if args.fit and args.fit_heldout_of:
        p.error("--fit and --fit-heldout-of exclude each other")
    return args


def setup(args: argparse.Namespace) -> tuple[Engine, Path, Any, Any]:
    """The engine, its models folder and the FIT and TEST sets (disjoint); SetupError where they cannot be had."""
    from training.errors import DataError

    if args.quick:
        models_dir = toy_models(ROLE, (32, 32))
        fit_dir, test_dir = synthetic_sets(scratch_dir("sixview-merges-"))
        args.fit, args.test = [str(fit_dir)], [str(test_dir)]
    else:
        models_dir = args.models
    engine = Engine(models_dir, routing=ROLE, device="cpu", precision="fp32", threads=args.threads)
    try:
        classes = list(engine.model(ROLE).meta.classes)
        fit = load_sets(set_specs(args.fit, args.fit_heldout_of), classes, args.limit)
        test = load_sets(set_specs(args.test, None), classes, args.test_limit)
    except (*SETUP_ERRORS, DataError) as e:
        raise SetupError(e) from e
    both = photo_keys(fit) & photo_keys(test)
    if both:
        raise SetupError(f"{len(both)} photos are in both the FIT and the TEST set (e.g. {sorted(both)[0]})")
    return engine, models_dir, fit, test


@dataclass
class Scores:
    """The photos that scored, FIT (pf, yf, mf) and TEST (pt, yt, mt): float64 view scores, targets, masks;
    the TEST classes measured (`cols`: with a positive, AP defined) and the classes with their own FIT
    parameters and thresholds."""

    ok_f: np.ndarray
    ok_t: np.ndarray
    pf: np.ndarray
    yf: np.ndarray
    mf: np.ndarray
    pt: np.ndarray
    yt: np.ndarray
    mt: np.ndarray
    cols: np.ndarray
    names: list[str]
    own_params: np.ndarray
    own_thr: np.ndarray


def split_scores(vs_fit: np.ndarray, fit: Any, vs_test: np.ndarray, test: Any, classes: list[str],
                 min_positives: int) -> Scores:
    """The photos without a failed view, and which classes are measured and fitted on their own."""
    ok_f, ok_t = ~np.isnan(vs_fit).any(axis=(1, 2)), ~np.isnan(vs_test).any(axis=(1, 2))
    yf, mf, yt, mt = fit.targets[ok_f], fit.mask[ok_f], test.targets[ok_t], test.mask[ok_t]
    cols = mt.any(axis=0) & ((yt >= 0.5) & mt).any(axis=0)  # test classes with a positive: AP defined
    return Scores(ok_f, ok_t, vs_fit[ok_f].astype(np.float64), yf, mf, vs_test[ok_t].astype(np.float64), yt, mt,
                  cols, [c for c, k in zip(classes, cols, strict=True) if k], eligible(yf, mf, min_positives),
                  ((yf >= 0.5) & mf).sum(axis=0) >= max(1, min_positives))


def measure_merge(mg: Any, sc: Scores, classes: list[str], args: argparse.Namespace
                  ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """One merge fitted on FIT and measured on TEST: its entry in the results, and its TEST scores and
    thresholds on the classes measured."""
    from training.eval import metrics as M

    cols, own_thr, names = sc.cols, sc.own_thr, sc.names
    params = mg.fit(sc.pf, sc.yf, sc.mf, args.min_positives)
    s_fit, s_test = mg.apply(params, sc.pf), mg.apply(params, sc.pt)
    thr, _ = choose_thresholds(sc.yf, s_fit, sc.mf, args.min_positives)
    res = merge_metrics(sc.yt[:, cols], s_test[:, cols], sc.mt[:, cols], thr[cols], names)
    for group, sel in (("own_threshold", cols & own_thr), ("pooled_threshold", cols & ~own_thr)):
        res[group] = M.micro_pr(sc.yt[:, sel], s_test[:, sel] >= thr[sel], sc.mt[:, sel]) if sel.any() else None
    # thresholds chosen on the TEST set itself: optimistic, only to separate ranking from threshold transfer
    thr_test, _ = choose_thresholds(sc.yt[:, cols], s_test[:, cols], sc.mt[:, cols], 1)
    oracle = merge_metrics(sc.yt[:, cols], s_test[:, cols], sc.mt[:, cols], thr_test, names)
    res["test_thresholds"] = {k: oracle[k] for k in ("precision", "recall", "f1", "label_free_labelled")}
    fit_names = [c for c, k in zip(classes, own_thr, strict=True) if k]
    fit_res = merge_metrics(sc.yf[:, own_thr], s_fit[:, own_thr], sc.mf[:, own_thr], thr[own_thr], fit_names) \
        if own_thr.any() else None
    cost = merge_cost_us(mg, params, len(classes), number=200 if args.quick else 2000)
    log(f"  {mg.name:<15} test mAP {pct(res['mAP'])}, P {pct(res['precision'])}, R {pct(res['recall'])},"
        f" F1 {pct(res['f1'])}, label-free labelled {pct(res['label_free_labelled'])}; {cost:.1f} us")
    entry = {"name": mg.name, "about": mg.about, "fitted": mg.fitted,
             "params": {k: np.asarray(v).tolist() for k, v in params.items()},
             "thresholds": thr.tolist(), "test": res, "fit_in_sample": fit_res, "cost_us": cost}
    return entry, s_test[:, cols], thr[cols]


def sets_summary(fit: Any, test: Any, sc: Scores, err_fit: list, err_test: list, classes: list[str]
                 ) -> dict[str, dict[str, Any]]:
    """The results' `fit` and `test`: photos, failures, label-free photos, the classes' data."""
    from training.eval import metrics as M

    names = lambda keep: [c for c, k in zip(classes, keep, strict=True) if k]  # noqa: E731
    counts = lambda n: {c: int(v) for c, v in zip(classes, n, strict=True)}  # noqa: E731
    return {
        "fit": {"name": fit.name, "images": int(sc.ok_f.sum()), "failed": int((~sc.ok_f).sum()),
                "failed_examples": [list(e) for e in err_fit[:5]],
                "label_free": int(M.label_free(sc.yf, sc.mf).sum()),
                "positives": counts(((sc.yf >= 0.5) & sc.mf).sum(axis=0)), "known": counts(sc.mf.sum(axis=0)),
                "own_params": names(sc.own_params), "own_threshold": names(sc.own_thr)},
        "test": {"name": test.name, "images": int(sc.ok_t.sum()), "failed": int((~sc.ok_t).sum()),
                 "failed_examples": [list(e) for e in err_test[:5]], "classes": sc.names,
                 "label_free": int(M.label_free(sc.yt[:, sc.cols], sc.mt[:, sc.cols]).sum())}}


def main(argv: list[str] | None = None) -> int:
    """Fit and measure the merges; return the exit code."""
    args = parse_args(argv)
    try:
        engine, models_dir, fit, test = setup(args)
    except SetupError as e:
        return failed(e)
    model = engine.model(ROLE)
    classes = list(model.meta.classes)
    out = out_dir(args.out, args.quick)
    log(f"merges: {model.path.name}; fit {fit.name} ({len(fit.records)} photos), "
        f"test {test.name} ({len(test.records)} photos)")
    vs_fit, err_fit = score_set(engine, fit, args.batch, args.scores_cache, log)
    vs_test, err_test = score_set(engine, test, args.batch, args.scores_cache, log)
    sc = split_scores(vs_fit, fit, vs_test, test, classes, args.min_positives)
    merges, scores, thresholds = [], {}, {}
    for mg in MERGES:
        entry, scores[mg.name], thresholds[mg.name] = measure_merge(mg, sc, classes, args)
        merges.append(entry)
    boot = bootstrap_deltas(sc.yt[:, sc.cols], scores, sc.mt[:, sc.cols], thresholds, sc.names, n=args.bootstrap)
    result: dict[str, Any] = {
        "benchmark": "merges", "quick": args.quick, "machine": machine_info(),
        "settings": {"model": model.path.name, "models": str(models_dir), "role": ROLE, "classes": classes,
                     "views": list(VIEW_NAMES), "fit": args.fit, "fit_heldout_of": args.fit_heldout_of,
                     "test": args.test, "limit": args.limit, "test_limit": args.test_limit,
                     "min_positives": args.min_positives, "bootstrap": args.bootstrap, "l2": L2, "eps": EPS,
                     "command": command_line("python -m benchmarks.merges", argv, quote=False)},
        **sets_summary(fit, test, sc, err_fit, err_test, classes), "merges": merges, "bootstrap": boot}
    result["verdict"] = verdict(merges, boot)
    write_results(out, "merges", result, markdown(result))
    log(result["verdict"])
    log(wrote(out, "merges"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
