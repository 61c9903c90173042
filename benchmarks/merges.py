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
import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks._common import (
    DEFAULT_MODELS,
    machine_md,
    md_table,
    out_dir,
    scratch_dir,
    toy_models,
    write_results,
)
from benchmarks.merge_strategies import MERGES, bootstrap_deltas, choose_thresholds, merge_cost_us, merge_metrics
from edge.engine import Engine
from edge.errors import SETUP_ERRORS
from edge.merge import EPS
from edge.stats import machine_info
from edge.tiling import VIEW_NAMES
from training.eval.merge_fit import L2, MIN_POSITIVES, eligible

ROLE = "hd"

def set_specs(paths: Sequence[str], heldout_of: str | None) -> list[tuple[Any, str, set[str] | None]]:
    """(source, split, held-out ids or None) per set, as `sixview eval` picks them
    (`training.commands.eval.input_specs`): each of `paths` (its test split if it has one, else its
    first), or the sets an adaptation run (RUN/splits.json) or a training run held out."""
    from training.commands.eval import input_specs

    return [(src, sp, only) for _, src, sp, only in input_specs(tuple(paths), None, heldout_of)]


def load_sets(specs, classes: Sequence[str], limit: int | None):
    """The sets joined (`combine_sets`), each limited to `limit` photos."""
    from training.eval.sets import combine_sets, load_set

    return combine_sets([load_set(src, sp, classes, limit, only=only) for src, sp, only in specs])


def _photo_keys(data) -> set[str]:
    """Each record's file, resolved (or its set and id when it has no file)."""
    return {str(Path(r.path).resolve()) if r.path is not None else f"{data.name}/{r.id}" for r in data.records}


def _part_key(model_path: Path, part) -> str:
    st = model_path.stat()
    h = hashlib.sha256(f"{model_path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(f"{part.path}\0{part.split}\0".encode())
    h.update("\n".join(part.ids).encode())
    return h.hexdigest()[:16]


def score_set(engine: Engine, data, batch: int, cache: Path | None, log,
              role: str = ROLE) -> tuple[np.ndarray, list]:
    """(N, 6, K) view scores of `role` on the set and the errors; with `cache`, each of its sets'
    scores is read from / written to `cache` (keyed by the model file and the set's photos)."""
    from types import SimpleNamespace

    from training.eval.scoring import view_scores

    parts = []
    for part, rows in zip(data.parts, data.part_rows(), strict=True):
        path = cache / f"merges-{_part_key(engine.model(role).path, part)}.npy" if cache is not None else None
        errors: list = []
        if path is not None and path.is_file():
            log(f"  {part.name}: scores from {path}")
            vs = np.load(path)
        else:
            t0 = time.perf_counter()
            vs = view_scores(engine, role, SimpleNamespace(records=data.records[rows]), batch, errors=errors)
            dt = time.perf_counter() - t0
            log(f"  {part.name}: scored {len(vs)} photos in {dt:.1f} s ({len(vs) / max(dt, 1e-9):.0f} photos/s),"
                f" {len(errors)} failed")
            if path is not None:
                cache.mkdir(parents=True, exist_ok=True)
                np.save(path, vs)
        parts.append((vs, errors))
    return np.concatenate([vs for vs, _ in parts]), [e for _, errs in parts for e in errs]


def synthetic_sets(root: Path, fit: int = 48, test: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """Two labelled folders (labels.csv, classes.txt) of synthetic photos for the toy colour model
    (red, green, blue): a class is present when a patch of its colour covers 3-10% of the photo;
    unlabelled specks (about 1%) of a colour are what a corner over-reads. About a third of the
    photos hold none of the classes."""
    import cv2

    rng = np.random.default_rng(seed)
    colours = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}  # BGR
    out = []
    for name, n in (("fit", fit), ("test", test)):
        d = root / name
        (d / "images").mkdir(parents=True, exist_ok=True)
        (d / "classes.txt").write_text("\n".join(colours) + "\n")
        rows = ["path,labels"]
        for i in range(n):
            h, w = 120, 160
            img = rng.integers(90, 170, (h, w, 3)).astype(np.uint8)
            labels = []
            for c, bgr in colours.items():
                if rng.random() < 0.3:
                    labels.append(c)
                    area = rng.uniform(0.03, 0.10) * h * w
                elif rng.random() < 0.5:
                    area = rng.uniform(0.006, 0.015) * h * w
                else:
                    continue
                side = int(np.sqrt(area))
                x0, y0 = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
                cv2.rectangle(img, (x0, y0), (x0 + side - 1, y0 + side - 1), bgr, -1)
            rel = f"images/{name}_{i:03d}.png"
            cv2.imwrite(str(d / rel), img)
            rows.append(f"{rel},{'|'.join(labels)}")
        (d / "labels.csv").write_text("\n".join(rows) + "\n")
        out.append(d)
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# The report


def _pct(v: float | None) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f}"


def _delta(ci: dict | None, key: str) -> str:
    if not ci:
        return ""
    lo, mid, hi = ci[key]
    return f"{100 * mid:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _params_md(name: str, params: dict[str, list[float]], classes: Sequence[str], own: Sequence[str]) -> str:
    """One merge's fitted parameters: one row when every class shares them, else a row per class
    with its own parameters and one for the others (the shared fallback)."""
    if not params:
        return ""
    if "w" in params:
        w, b = np.asarray(params["w"]), np.asarray(params["b"])
        keys = ["w_whole", "w_crop_max", "w_crop_mean", "bias"]
        table = np.vstack([w, b[None]])  # (4, K)
    else:
        keys = ["a_whole", "b_whole", "a_crop", "b_crop"]
        table = np.asarray([params[k] for k in keys])
    if np.allclose(table, table[:, :1]):
        rows = [["all classes", *table[:, 0].tolist()]]
    else:
        others = [i for i, c in enumerate(classes) if c not in own]
        rows = [[c, *table[:, i].tolist()] for i, c in enumerate(classes) if c in own]
        if others:
            rows.append(["others: " + ", ".join(classes[i] for i in others), *table[:, others[0]].tolist()])
    return f"\n`{name}`\n\n" + md_table(["classes", *keys], rows)


def markdown(result: dict[str, Any]) -> str:
    s, fit, test = result["settings"], result["fit"], result["test"]
    text = ["# View merges: max against view-aware merges\n\n", machine_md(result["machine"]),
            f"\nModel `{s['model']}` ({s['role']}, {', '.join(s['classes'])}). Command: `{s['command']}`.\n\n"
            f"- **Fit** (parameters and thresholds): {fit['name']}: {fit['images']} photos"
            f" ({fit['failed']} failed), {fit['label_free']} label-free; FIT positives per class: "
            + ", ".join(f"{c} {n}" for c, n in fit["positives"].items()) + ".\n"
            f"- **Test**: {test['name']}: {test['images']} photos ({test['failed']} failed),"
            f" {test['label_free']} label-free; classes scored: {', '.join(test['classes'])}.\n"
            f"- Thresholds: per class max F1 on the FIT set for the classes with >= {s['min_positives']}"
            f" FIT positives ({', '.join(fit['own_threshold']) or 'none'}); the others share one max-F1"
            " threshold pooled over those. Labels = classes at or above their threshold (no presence"
            " threshold, no fallback guess).\n"
            f"- Deltas: paired bootstrap over test photos ({s['bootstrap']} draws), median"
            " [95% interval], percentage points, against `max`.\n\n"]
    rows, split_rows = [], []
    for m in result["merges"]:
        t, ci = m["test"], result["bootstrap"].get(m["name"])
        rows.append([m["name"], m["fitted"], _pct(t["mAP"]), _delta(ci, "mAP"), _pct(t["precision"]),
                     _pct(t["recall"]), _pct(t["f1"]), _delta(ci, "f1"), _pct(t["label_free_labelled"]),
                     _delta(ci, "label_free_labelled"), f"{m['cost_us']:.1f}"])
        own, pooled, tt = t["own_threshold"], t["pooled_threshold"], t["test_thresholds"]
        split_rows.append([m["name"], *(_pct(g[k]) if g else "-" for g in (own, pooled) for k in ("precision", "recall",
                                                                                               "f1")),
                           _pct(tt["precision"]), _pct(tt["recall"]), _pct(tt["f1"]), _pct(tt["label_free_labelled"])])
    text.append(md_table(["merge", "params", "test mAP", "d mAP", "micro P", "micro R", "micro F1", "d F1",
                          "label-free labelled", "d label-free", "us/image"], rows))
    text.append("\nPercent. `us/image`: the merge alone, numpy on one (6, "
                f"{len(s['classes'])}) array (the runtime's list-based max is cheaper still).\n\n")
    own_names = [c for c in test["classes"] if c in fit["own_threshold"]]
    pooled_names = [c for c in test["classes"] if c not in fit["own_threshold"]]
    text.append("## Where the P/R differences come from\n\nMicro P/R/F1 at the FIT thresholds, on the test classes"
                f" with their own FIT threshold ({', '.join(own_names) or 'none'}) and on those with the pooled one"
                f" ({', '.join(pooled_names) or 'none'}); then at per-class max-F1 thresholds chosen on the TEST set"
                " itself (optimistic, never an operating point: it shows what each merge's ranking allows once"
                " the threshold transfer from FIT to TEST is taken out).\n\n")
    text.append(md_table(["merge", "own P", "own R", "own F1", "pooled P", "pooled R", "pooled F1",
                          "test-thr P", "test-thr R", "test-thr F1", "test-thr label-free labelled"], split_rows))
    text.append("\n")
    text.append("## Merges\n\n" + "".join(f"- `{m['name']}`: {m['about']}\n" for m in result["merges"]))
    text.append("\n## Per-class AP on the test set (percent)\n\n")
    names = test["classes"]
    text.append(md_table(["merge", *names], [[m["name"], *(_pct(m["test"]["ap"][c]) for c in names)]
                                              for m in result["merges"]]))
    text.append("\n## Fitted parameters\n\nPlatt: sigmoid(a * z + b) per view kind; learned: sigmoid(w_whole *"
                " z_whole + w_crop_max * max z_crop + w_crop_mean * mean z_crop + bias); z = logit of a view's"
                " score. Classes without enough FIT data use the shared (fallback) row.\n")
    own = fit["own_params"]
    for m in result["merges"]:
        text.append(_params_md(m["name"], m["params"], s["classes"], own))
    text.append("\n## Thresholds (chosen on the FIT set)\n\n")
    text.append(md_table(["merge", *s["classes"]], [[m["name"], *m["thresholds"]] for m in result["merges"]]))
    text.append(f"\n{result['verdict']}\n")
    return "".join(text)


def verdict(merges: list[dict], boot: dict) -> str:
    """One paragraph: the best test mAP and F1 against max, with their intervals."""
    base = next(m for m in merges if m["name"] == "max")
    by_map = max(merges, key=lambda m: m["test"]["mAP"])
    by_f1 = max(merges, key=lambda m: m["test"]["f1"])

    def sig(name: str, key: str) -> str:
        ci = boot.get(name)
        if not ci:
            return ""
        lo, _, hi = ci[key]
        return " (interval excludes 0)" if lo > 0 or hi < 0 else " (interval includes 0)"

    def best(m: dict, key: str, what: str) -> str:
        if m["test"][key] <= base["test"][key]:
            return f"{what}: no merge beats max ({_pct(base['test'][key])})."
        return (f"{what}: `{m['name']}` {_pct(m['test'][key])} vs max {_pct(base['test'][key])}"
                f"{sig(m['name'], key)}.")

    parts = [best(by_map, "mAP", "Best test mAP"), best(by_f1, "f1", "Best micro F1 at FIT thresholds")]
    return "**Verdict**: " + " ".join(parts)


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.merges", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="models folder (default: models/)")
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
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/<machine>/)")
    p.add_argument("--quick", action="store_true", help="smoke run: toy colour model on synthetic photos")
    args = p.parse_args(argv)
    if args.quick:
        args.bootstrap = min(args.bootstrap, 20)
        args.min_positives = min(args.min_positives, 5)
    elif not (args.fit or args.fit_heldout_of) or not args.test:
        p.error("--fit DATA (or --fit-heldout-of RUN) and --test DATA are required (or --quick)")
    if args.fit and args.fit_heldout_of:
        p.error("--fit and --fit-heldout-of exclude each other")
    return args


def main(argv: list[str] | None = None) -> int:
    """Fit and measure the merges; return the exit code."""
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    from training.errors import DataError

    if args.quick:
        models_dir = toy_models(ROLE, (32, 32))
        fit_dir, test_dir = synthetic_sets(scratch_dir("sixview-merges-"))
        args.fit, args.test = [str(fit_dir)], [str(test_dir)]
    else:
        models_dir = args.models
    engine = Engine(models_dir, routing=ROLE, device="cpu", precision="fp32", threads=args.threads)
    try:
        model = engine.model(ROLE)
        classes = list(model.meta.classes)
        fit = load_sets(set_specs(args.fit, args.fit_heldout_of), classes, args.limit)
        test = load_sets(set_specs(args.test, None), classes, args.test_limit)
    except (*SETUP_ERRORS, DataError) as e:
        log(f"error: {e}")
        return 2
    both = _photo_keys(fit) & _photo_keys(test)
    if both:
        log(f"error: {len(both)} photos are in both the FIT and the TEST set (e.g. {sorted(both)[0]})")
        return 2
    out = out_dir(args.out, args.quick)
    log(f"merges: {model.path.name}; fit {fit.name} ({len(fit.records)} photos), "
        f"test {test.name} ({len(test.records)} photos)")
    vs_fit, err_fit = score_set(engine, fit, args.batch, args.scores_cache, log)
    vs_test, err_test = score_set(engine, test, args.batch, args.scores_cache, log)

    ok_f, ok_t = ~np.isnan(vs_fit).any(axis=(1, 2)), ~np.isnan(vs_test).any(axis=(1, 2))
    pf, yf, mf = vs_fit[ok_f].astype(np.float64), fit.targets[ok_f], fit.mask[ok_f]
    pt, yt, mt = vs_test[ok_t].astype(np.float64), test.targets[ok_t], test.mask[ok_t]
    cols = mt.any(axis=0) & ((yt >= 0.5) & mt).any(axis=0)  # test classes with a positive: AP defined
    names = [c for c, k in zip(classes, cols, strict=True) if k]
    own_params = eligible(yf, mf, args.min_positives)
    own_thr = ((yf >= 0.5) & mf).sum(axis=0) >= max(1, args.min_positives)

    from training.eval import metrics as M

    merges, scores, thresholds = [], {}, {}
    for mg in MERGES:
        params = mg.fit(pf, yf, mf, args.min_positives)
        s_fit, s_test = mg.apply(params, pf), mg.apply(params, pt)
        thr, _ = choose_thresholds(yf, s_fit, mf, args.min_positives)
        res = merge_metrics(yt[:, cols], s_test[:, cols], mt[:, cols], thr[cols], names)
        for group, sel in (("own_threshold", cols & own_thr), ("pooled_threshold", cols & ~own_thr)):
            res[group] = M.micro_pr(yt[:, sel], s_test[:, sel] >= thr[sel], mt[:, sel]) if sel.any() else None
        # thresholds chosen on the TEST set itself: optimistic, only to separate ranking from threshold transfer
        thr_test, _ = choose_thresholds(yt[:, cols], s_test[:, cols], mt[:, cols], 1)
        oracle = merge_metrics(yt[:, cols], s_test[:, cols], mt[:, cols], thr_test, names)
        res["test_thresholds"] = {k: oracle[k] for k in ("precision", "recall", "f1", "label_free_labelled")}
        fit_names = [c for c, k in zip(classes, own_thr, strict=True) if k]
        fit_res = merge_metrics(yf[:, own_thr], s_fit[:, own_thr], mf[:, own_thr], thr[own_thr], fit_names) \
            if own_thr.any() else None
        cost = merge_cost_us(mg, params, len(classes), number=200 if args.quick else 2000)
        scores[mg.name], thresholds[mg.name] = s_test[:, cols], thr[cols]
        merges.append({"name": mg.name, "about": mg.about, "fitted": mg.fitted,
                       "params": {k: np.asarray(v).tolist() for k, v in params.items()},
                       "thresholds": thr.tolist(), "test": res, "fit_in_sample": fit_res, "cost_us": cost})
        log(f"  {mg.name:<15} test mAP {_pct(res['mAP'])}, P {_pct(res['precision'])}, R {_pct(res['recall'])},"
            f" F1 {_pct(res['f1'])}, label-free labelled {_pct(res['label_free_labelled'])}; {cost:.1f} us")
    boot = bootstrap_deltas(yt[:, cols], scores, mt[:, cols], thresholds, names, n=args.bootstrap)
    command = "python -m benchmarks.merges " + " ".join(argv if argv is not None else sys.argv[1:])
    result: dict[str, Any] = {
        "benchmark": "merges", "quick": args.quick, "machine": machine_info(),
        "settings": {"model": model.path.name, "models": str(models_dir), "role": ROLE, "classes": classes,
                     "views": list(VIEW_NAMES), "fit": args.fit, "fit_heldout_of": args.fit_heldout_of,
                     "test": args.test, "limit": args.limit, "test_limit": args.test_limit,
                     "min_positives": args.min_positives, "bootstrap": args.bootstrap, "l2": L2, "eps": EPS,
                     "command": command},
        "fit": {"name": fit.name, "images": int(ok_f.sum()), "failed": int((~ok_f).sum()),
                "failed_examples": [list(e) for e in err_fit[:5]],
                "label_free": int(M.label_free(yf, mf).sum()),
                "positives": {c: int(n) for c, n in zip(classes, ((yf >= 0.5) & mf).sum(axis=0), strict=True)},
                "known": {c: int(n) for c, n in zip(classes, mf.sum(axis=0), strict=True)},
                "own_params": [c for c, k in zip(classes, own_params, strict=True) if k],
                "own_threshold": [c for c, k in zip(classes, own_thr, strict=True) if k]},
        "test": {"name": test.name, "images": int(ok_t.sum()), "failed": int((~ok_t).sum()),
                 "failed_examples": [list(e) for e in err_test[:5]], "classes": names,
                 "label_free": int(M.label_free(yt[:, cols], mt[:, cols]).sum())},
        "merges": merges, "bootstrap": boot}
    result["verdict"] = verdict(merges, boot)
    write_results(out, "merges", result, markdown(result))
    log(result["verdict"])
    log(f"wrote {out / 'merges.json'}, merges.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
