"""Which operating points can a model reach on a set: is a trust goal a matter of calibration?

The model's own decision (its merge, per-class thresholds and presence threshold, as the runtime
applies them: `training.eval.decision.decide_rows`) is moved along two axes:

  shift      every class threshold moved by the same amount in logit space
             (t -> sigmoid(logit(t) + shift)); 0 is the model's own thresholds
  presence   the presence threshold (an image whose P(any class) is below it gets no label)

and at every point the confident labels are scored like `sixview eval`'s trust section: micro
precision and recall, and the share of label-free photos (none of their set's classes present)
given a label. The goal (`--goal-recall`, `--goal-precision`, `--goal-label-free`) is then
either reachable at some point of the grid or not; when it is not reachable even on the set
itself, no calibration can reach it there: the model has to rank photos better.

This only measures. Points chosen here on a set would be chosen on that set: a model's
thresholds come from `sixview eval --calibrate` on photos its figures are not reported on.

    python -m benchmarks.operating_points --data ../shared/data/voc07_val
    python -m benchmarks.operating_points --heldout-of runs/<recipe>/hd --models runs/<recipe>/calibrated
    python -m benchmarks.operating_points --quick     # smoke run: toy colour model on synthetic photos
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks._cli import add_models, add_out_quick, command_line, failed, log, parser
from benchmarks._common import machine_md, md_table, out_dir, scratch_dir, toy_models, write_results
from benchmarks.merges_data import load_sets, score_set, set_specs, synthetic_sets
from edge.engine import Engine
from edge.errors import SETUP_ERRORS
from edge.merge import logit, merged_scores, sigmoid
from edge.stats import machine_info
from training.eval.report import pct

SHIFTS = tuple(round(v, 2) for v in np.arange(-2.0, 2.01, 0.25))
PRESENCE = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def grid(s: np.ndarray, y: np.ndarray, mask: np.ndarray, thresholds: np.ndarray, fallback: float,
         shifts=SHIFTS, presence=PRESENCE) -> list[dict[str, Any]]:
    """P/R/label-free share of the confident labels at every (shift, presence) point on merged
    scores `s` (N, K), targets `y` and known mask (N, K), per-class `thresholds` (K,)."""
    from training.eval import metrics as M
    from training.eval.decision import decide_rows

    cols = mask.any(axis=0)
    out = []
    for shift in shifts:
        th = sigmoid(logit(np.asarray(thresholds, np.float64)) + shift)
        for p in presence:
            conf, guess, pres = decide_rows(s, th, fallback, p)
            t = M.trust(y[:, cols], mask[:, cols], conf[:, cols], guess[:, cols], pres)
            out.append({"shift": float(shift), "presence": float(p), "precision": t["confident"]["precision"],
                        "recall": t["confident"]["recall"], "label_free_labelled": t["label_free_confident"]})
    return out


def meets(point: dict[str, Any], goal: dict[str, float]) -> bool:
    """Whether a point reaches the goal (recall and precision at least, label-free share at most)."""
    return (point["recall"] >= goal["recall"] and point["precision"] >= goal["precision"]
            and point["label_free_labelled"] <= goal["label_free"])


def closest(points: list[dict[str, Any]], goal: dict[str, float]) -> dict[str, Any]:
    """Among the points with the goal's recall, the one labelling the fewest label-free photos
    (the highest recall when none has it)."""
    ok = [p for p in points if p["recall"] >= goal["recall"]]
    if ok:
        return min(ok, key=lambda p: (p["label_free_labelled"], -p["precision"]))
    return max(points, key=lambda p: (p["recall"], -p["label_free_labelled"]))


def markdown(r: dict[str, Any]) -> str:
    g, own, near = r["goal"], r["own"], r["closest"]
    reach = r["reachable"]
    rows = [[f"{p['shift']:+.2f}", f"{p['presence']:.2f}", pct(p["precision"]), pct(p["recall"]),
             pct(p["label_free_labelled"]), "yes" if meets(p, g) else ""] for p in r["points"]
            if p["recall"] >= g["recall"] - 0.05]
    return "\n".join([
        "# Operating points", "", machine_md(r["machine"]), "",
        f"Model `{r['settings']['model']}` on {r['set']} ({r['images']} images, {r['label_free']} label-free). "
        f"Command: `{r['settings']['command']}`.", "",
        f"Goal: recall >= {pct(g['recall'])}, precision >= {pct(g['precision'])}, label-free photos labelled "
        f"<= {pct(g['label_free'])} (percent).", "",
        f"- The model's own decision: precision {pct(own['precision'])}, recall {pct(own['recall'])}, "
        f"label-free labelled {pct(own['label_free_labelled'])}.",
        f"- Closest point with the goal's recall: shift {near['shift']:+.2f}, presence {near['presence']:.2f}: "
        f"precision {pct(near['precision'])}, recall {pct(near['recall'])}, label-free labelled "
        f"{pct(near['label_free_labelled'])}.",
        f"- **Goal reachable on this set by thresholds alone: {'yes' if reach else 'no'}** "
        f"({sum(meets(p, g) for p in r['points'])} of {len(r['points'])} points).", "",
        "Points within 5 recall points of the goal (percent):", "",
        md_table(["shift (logit)", "presence", "precision", "recall", "label-free labelled", "goal"], rows), ""])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser("python -m benchmarks.operating_points", __doc__)
    add_models(p)
    p.add_argument("--data", action="append", default=[], help="a labelled set (repeatable)")
    p.add_argument("--heldout-of", default=None, metavar="RUN", help="the photos a run held out (splits.json)")
    p.add_argument("--role", choices=("standard", "hd"), default="hd", help="which model (default hd)")
    p.add_argument("--goal-recall", type=float, default=0.85)
    p.add_argument("--goal-precision", type=float, default=0.85)
    p.add_argument("--goal-label-free", type=float, default=0.10)
    p.add_argument("--limit", type=int, default=None, help="at most N photos per set")
    p.add_argument("--batch", type=int, default=8, help="photos per model call (default 8)")
    p.add_argument("--scores-cache", type=Path, default=None, help="folder for the view scores (reused)")
    add_out_quick(p, "smoke run: toy colour model on synthetic photos")
    args = p.parse_args(argv)
    if not args.quick and bool(args.data) == bool(args.heldout_of):
        p.error("give --data DATA (repeatable) or --heldout-of RUN (or --quick)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Sweep the operating points; return the exit code."""
    args = parse_args(argv)
    from training.errors import DataError

    models_dir = args.models
    if args.quick:
        models_dir, args.role = toy_models("hd", (32, 32)), "hd"
        args.data = [str(synthetic_sets(scratch_dir("sixview-points-"))[1])]
    engine = Engine(models_dir, routing=args.role, device="cpu", precision="fp32")
    try:
        model = engine.model(args.role)
        data = load_sets(set_specs(args.data, args.heldout_of), model.meta.classes, args.limit)
    except (*SETUP_ERRORS, DataError) as e:
        return failed(e)
    vs, errors = score_set(engine, data, args.batch, args.scores_cache, log, args.role)
    ok = ~np.isnan(vs).any(axis=(1, 2))
    meta = model.meta
    s = merged_scores(vs[ok].astype(np.float32), meta.merge, meta.classes)
    y, mask = data.targets[ok], data.mask[ok]
    th = np.array([meta.thresholds[c] for c in meta.classes])
    goal = {"recall": args.goal_recall, "precision": args.goal_precision, "label_free": args.goal_label_free}
    points = grid(s, y, mask, th, meta.fallback_min_score)
    own = grid(s, y, mask, th, meta.fallback_min_score, (0.0,), (float(meta.presence_threshold or 0.0),))[0]
    from training.eval import metrics as M

    cols = mask.any(axis=0)
    command = command_line("python -m benchmarks.operating_points", argv, quote=False)
    result = {"benchmark": "operating_points", "quick": args.quick, "machine": machine_info(),
              "settings": {"model": str(model.path), "role": args.role, "data": args.data,
                           "heldout_of": args.heldout_of, "limit": args.limit, "command": command},
              "set": data.name, "images": int(ok.sum()), "failed": len(errors),
              "label_free": int(M.label_free(y[:, cols], mask[:, cols]).sum()), "goal": goal, "own": own,
              "points": points, "closest": closest(points, goal), "reachable": any(meets(p, goal) for p in points)}
    for p in write_results(out_dir(args.out, args.quick), "operating_points", result, markdown(result)):
        log(f"wrote {p}")
    near = result["closest"]
    log(f"own: P {pct(own['precision'])} R {pct(own['recall'])} label-free {pct(own['label_free_labelled'])}; "
        f"closest at the goal's recall: P {pct(near['precision'])} R {pct(near['recall'])} label-free "
        f"{pct(near['label_free_labelled'])}; reachable: {'yes' if result['reachable'] else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
