"""The accuracy gate for running a model at a lower compute precision (BF16 or INT8 on OpenVINO).

For each role's FP32 file in --models, every image of --data is decoded and its
views rendered once (the runtime's own pipeline, `edge.pipeline.stream`, six views), then scored
by ONNX Runtime FP32 (the reference), OpenVINO FP32 and OpenVINO at each of
--precisions (bf16; int8: the file's INT8 IR, `<role>.int8-ov.xml`, made by
`python -m convert.int8_ov`), on the same pixels. Per backend, the runtime's decision
(`Engine.rule`, `edge.rule.DecisionRule`, as `sixview eval`): the views' scores merged by
the model's merge, mAP over the classes the set labels (`sixview eval`'s metric), and the
decisions at the model's own thresholds, fallback and presence threshold.

The gate passes when the lower precision's mAP is at most 0.5 point below the
FP32 reference (`edge.gates.MAX_MAP_DROP`). It also reports label flips: the
(image, class) pairs whose confident label differs from FP32's, the images
whose labels or guess differ, and the largest score difference. The result is
written next to the model (`models/hd.gates.json`, `edge/gates.py`), with the
file's SHA-256, the set, the date and the CPU; `--precision auto` reads it at
start and never recomputes it. BF16 is measured only on CPUs that compute it
natively (never emulated).

Use a set that played no part in choosing what is gated (for INT8, never the
calibration photos). The gate compares two precisions on the same photos, so
a set on which the thresholds were calibrated still measures the difference;
the file says when that is the case.

    python -m benchmarks.precision_gate --models models --data ../shared/data/voc07_val
    python -m benchmarks.precision_gate --precisions bf16,int8
    python -m benchmarks.precision_gate --roles hd --limit 200 --no-write    # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks._common import DEFAULT_MODELS, REPO
from edge.engine import Engine, item_scores
from edge.errors import SETUP_ERRORS
from edge.gates import MAX_MAP_DROP, passes, write_gate
from edge.inputs import file_sha256
from edge.metadata import ROLES
from edge.model import Model, model_file, open_model
from edge.openvino_backend import ir_path, native_bf16, version
from edge.rule import Decisions
from edge.stats import cpu_model, machine_info
from training.eval.scoring import scores_of

DEFAULT_DATA = REPO.parent / "shared" / "data" / "voc07_val"
RULE = f"mAP (six views, classes the set labels) at most {MAX_MAP_DROP * 100:g} point below ONNX Runtime FP32's"


def view_scores(engine: Engine, role: str, records: list, models: dict[str, Model], batch: int = 8,
                workers: int = 2) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(name -> (N, views, K) view scores, valid rows): each image loaded once by the runtime's pipeline
    (`training.eval.scoring.scores_of`, as `sixview eval` scores), then run by every model on the same
    pixels. Images that fail to load are invalid rows."""

    def run(items: list) -> list[dict[str, np.ndarray]]:
        pixels = np.concatenate([p.pixels for p in items])
        views = {name: item_scores(model(pixels), items, model.meta.rows_per_input) for name, model in models.items()}
        return [{name: v[j] for name, v in views.items()} for j in range(len(items))]

    return scores_of(engine, role, records, run, list(models), batch, workers)


def compare(y: np.ndarray, mask: np.ndarray, classes: list[str], ref: Decisions, low: Decisions) -> dict[str, Any]:
    """mAP of both, and how the lower precision's decisions differ from the reference's (both by
    the runtime's rule, `edge.rule.DecisionRule`, as `sixview eval` decides)."""
    from training.eval import metrics as M

    flips = ref.confident != low.confident
    changed = flips.any(axis=1) | (ref.guess != low.guess)
    map_ref = M.mean_ap(M.per_class_ap(y, ref.scores, classes, mask))
    map_low = M.mean_ap(M.per_class_ap(y, low.scores, classes, mask))
    return {"map_fp32": map_ref, "map": map_low, "map_delta_points": (map_low - map_ref) * 100,
            "flips": int(flips.sum()), "flips_lost": int((flips & ref.confident).sum()),
            "flips_gained": int((flips & low.confident).sum()), "images_changed": int(changed.sum()),
            "max_abs_score_diff": float(np.abs(ref.scores - low.scores).max())}


def gate_role(models_dir: Path, role: str, data: Any, precisions: list[str], args: argparse.Namespace,
              log=print) -> dict[str, dict[str, Any]]:
    """Score one role's FP32 file by ONNX Runtime FP32, OpenVINO FP32 and OpenVINO at each of
    `precisions`, on the same pixels, and judge each lower precision: precision -> result."""
    from training.commands.eval import calibration_overlap
    from training.eval.sets import load_set

    path = model_file(models_dir, role, "cpu", "fp32")
    engine = Engine(models_dir, routing=role, device="cpu", precision="fp32", threads=args.threads)
    ref = engine.model(role)
    models = {"onnxruntime_fp32": ref, "openvino_fp32": open_model(path, "openvino", args.threads, "fp32")}
    for precision in precisions:
        models[f"openvino_{precision}"] = m = open_model(path, "openvino", args.threads, precision)
        if m.precision != precision:
            raise RuntimeError(f"OpenVINO ran {m.precision}, not {precision}")
    source, split = data
    ds = load_set(source, split, ref.meta.classes, args.limit)
    log(f"{path.name}: {len(ds.records)} images of {ds.name}")
    scores, valid = view_scores(engine, role, ds.records, models, args.batch, args.workers)
    y, mask, classes = ds.targets[valid], ds.mask[valid], list(ref.meta.classes)
    rule = engine.rule(role)  # the model's own merge, thresholds, fallback and presence threshold
    decided = {name: rule.decide_views(vs[valid]) for name, vs in scores.items()}
    ref_d = decided["onnxruntime_fp32"]
    ov32 = compare(y, mask, classes, ref_d, decided["openvino_fp32"])
    chose = bool(calibration_overlap(ref.meta.provenance, ds, valid))  # some gated images chose the thresholds
    out: dict[str, dict[str, Any]] = {}
    for precision in precisions:
        low = compare(y, mask, classes, ref_d, decided[f"openvino_{precision}"])
        result = {"passed": passes(low["map_fp32"], low["map"]), **low,
                  "images": int(valid.sum()), "failed_images": int((~valid).sum()),
                  "set": f"{args.data} ({split})",  # as given (an archive's extraction folder is a cache)
                  "thresholds_calibrated_on_set": chose,
                  "openvino_fp32": {k: ov32[k] for k in ("map", "flips", "images_changed", "max_abs_score_diff")},
                  "rule": RULE, "reference": "onnxruntime CPU fp32, same pixels",
                  "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "cpu": cpu_model(),
                  "cpu_flags": machine_info()["cpu_flags"], "openvino": version(), "threads": args.threads,
                  "sha256": file_sha256(path), "file": path.name}
        if precision == "int8":
            bin_path = ir_path(path).with_suffix(".bin")
            result.update(ir=ir_path(path).name, ir_sha256=file_sha256(bin_path),
                          float_parts=getattr(models["openvino_int8"].session, "float_parts", "fp32"))
        if not result["passed"]:
            result["reason"] = f"mAP {low['map'] * 100:.2f} vs FP32 {low['map_fp32'] * 100:.2f}"
        out[precision] = result
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.precision_gate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="models folder (default: models/)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="labelled set (default ../shared/data/voc07_val)")
    p.add_argument("--split", default=None, help="split (default: test if the set has one, else all)")
    p.add_argument("--roles", default=",".join(ROLES), help="which models (default standard,hd)")
    p.add_argument("--precisions", "--precision", dest="precisions", default="bf16",
                   help="comma-separated precisions to gate: bf16, int8 (default bf16)")
    p.add_argument("--limit", type=int, default=None, help="an evenly spaced subset of N images")
    p.add_argument("--threads", type=int, default=0, help="inference threads (0: the backends' default)")
    p.add_argument("--batch", type=int, default=8, help="images per model call (default 8)")
    p.add_argument("--workers", type=int, default=2, help="decode threads (default 2)")
    p.add_argument("--no-write", action="store_true", help="print the result, do not write <model>.gates.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the gate for every role; 0 when every gate was measured (passed or not), 2 on a setup error."""
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not precisions or any(p not in ("bf16", "int8") for p in precisions):
        log(f"error: --precisions takes bf16 and/or int8, not {args.precisions}")
        return 2
    if "bf16" in precisions and not native_bf16():
        log("error: this CPU has no native BF16 (avx512_bf16 or amx_bf16): the bf16 gate is measured only "
            "where BF16 really runs")
        return 2
    try:
        from training.data.datasets import open_source
        from training.errors import UserError

        source = open_source(args.data, strict=False)
    except ImportError as e:
        log(f"error: the gate scores like sixview eval and needs its extras ({e}): pip install '.[cpu,train]'")
        return 2
    except UserError as e:
        log(f"error: {e}")
        return 2
    split = args.split or ("test" if "test" in source.splits else source.splits[0])
    results: dict[str, Any] = {}
    for role in [r.strip() for r in args.roles.split(",") if r.strip()]:
        try:
            per = gate_role(args.models, role, (source, split), precisions, args, log)
        except (*SETUP_ERRORS, UserError) as e:
            log(f"error: {role}: {e}")
            return 2
        results[role] = per
        for precision, r in per.items():
            log(f"{r['file']} {precision}: {'PASSED' if r['passed'] else 'FAILED'}: mAP {r['map'] * 100:.2f} vs "
                f"FP32 {r['map_fp32'] * 100:.2f} ({r['map_delta_points']:+.2f} point), {r['flips']} label flips "
                f"on {r['images_changed']} of {r['images']} images, max score diff {r['max_abs_score_diff']:.4f}")
            if not args.no_write:
                log(f"  wrote {write_gate(args.models / r['file'], precision, r)}")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
