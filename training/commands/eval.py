"""`sixview eval`: score the ONNX models on labelled sets (through the edge runtime), calibrate them."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
import numpy as np

from edge.engine import Engine
from edge.errors import SETUP_ERRORS
from edge.merge import merged_scores
from edge.metadata import PRECISIONS, ROLES, ModelMeta
from edge.options import setup_error
from edge.providers import DEVICES
from training.commands.eval_inputs import check_inputs, report_failed
from training.data.datasets import DataSource, open_source
from training.data.labels import parse_classes
from training.errors import UserError
from training.eval import decision as D
from training.eval.calibrate import role_files, write_thresholds
from training.eval.groups import group_breakdown
from training.eval.merge_fit import fit_logit_linear, own_bias
from training.eval.report import merge_text, pct, summary_lines, write_report
from training.eval.scoring import evaluate_role
from training.eval.sets import LabelledSet, combine_sets, ids_sha256, load_set, run_part


@click.command("eval")
@click.argument("models_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--data", multiple=True,
              help="Labelled set: folder with labels.csv (+ boxes.csv), or a CIFAR-10 folder/archive. Repeatable: "
                   "several sets are scored together, each row against its own set's classes.")
@click.option("--split", default=None, help="Split to score (default: test if the set has one, else all).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Score an evenly spaced subset of N images (per set).")
@click.option("--heldout-of", type=click.Path(file_okay=False, exists=True), default=None,
              help="Score only the images this run held out: an adaptation run's splits.json (every set's "
                   "held-out photos), else a training run's validation images (its --data and split).")
@click.option("--report-of", type=click.Path(file_okay=False, exists=True), default=None,
              help="Score only the photos an adaptation run set aside for reporting (adapt --report): they chose "
                   "nothing (not the epoch, not thresholds), so their figures are fair. Not with --calibrate.")
@click.option("--engines", default=",".join(ROLES), show_default=True, help="Which models to score.")
@click.option("--unlabelled-classes", default=None,
              help="Classes the set(s) do not label (masked); default: model classes absent from each set.")
@click.option("--allow-missing", is_flag=True,
              help="Score the rest when listed images are missing, unreadable or fail to decode; they are "
                   "counted and named on stderr and in the report. Without it, missing or unreadable files "
                   "stop eval before scoring (exit 1), and images that fail to decode give exit 1 after the report.")
@click.option("--ignore-class", "ignore_class", multiple=True, metavar="NAME",
              help="Drop the label NAME from the rows that carry it (repeatable, or comma-separated). Only for "
                   "names that are not classes of the set (not in its classes.txt; without one, not a class of "
                   "the models): such a label is otherwise an error (exit 1), never silently dropped.")
@click.option("--ignore-unknown-classes", is_flag=True,
              help="Drop every label name that is not a class of the set (each is still named on stderr and in "
                   "the report).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report folder (default: eval_out/<set name>).")
@click.option("--calibrate", is_flag=True,
              help="Choose per-class thresholds (max F1) and then a presence threshold on the scored images.")
@click.option("--fit-merge", is_flag=True,
              help="With --calibrate: first fit the view-aware merge (logit_linear: whole view, best and mean "
                   "crop logits, shared weights and a bias per class) on the scored images, then choose the "
                   "thresholds on its merged scores; the calibrated models carry it (metadata `merge`).")
@click.option("--calibrated-out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where calibrated model files go (default: MODELS_DIR/calibrated).")
@click.option("--in-place", is_flag=True, help="With --calibrate: rewrite the files in MODELS_DIR.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(("auto", *PRECISIONS)), default="fp32", show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0)
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True, help="Images per model call.")
def eval_cmd(models_dir: Path, data: tuple[str, ...], split: str | None, limit: int | None, heldout_of: str | None,
             report_of: str | None, engines: str, unlabelled_classes: str | None, allow_missing: bool,
             ignore_class: tuple[str, ...], ignore_unknown_classes: bool, out_dir: Path | None, calibrate: bool,
             fit_merge: bool, calibrated_out: Path | None, in_place: bool, device: str, precision: str,
             threads: int, batch: int) -> None:
    """Score the models in MODELS_DIR on labelled sets, at each model's own decision: mAP and
    per-class AP, precision/recall/F1 of the confident labels (and of confident-or-guess), how
    often label-free photos get a label, the AUROC of presence, exact match, top-1, recall by
    object size, each with tiling on and off (and per set when there are several).

    Writes report.md, report.json and pr.png. With --calibrate, also writes models whose per-class
    thresholds maximise F1 on the scored images and whose presence threshold is then chosen on the
    same images (never report calibrated figures on the calibrating images). With --fit-merge, the
    view merge is fitted on those images first and the thresholds are chosen on its scores.
    A set with groups.csv (path,group) or species.csv (path,species) also gets, per group, the
    share of its photos given a label and the labels given most ("what does it call a fox").

    Nothing is left out silently. Exit code 0 when every listed image was scored and every label
    names a class of its set; 1 when listed images are missing, unreadable or undecodable (unless
    --allow-missing) or labels name other classes (unless --ignore-class/--ignore-unknown-classes);
    2 for a usage, model or data error, including a set with nothing to score.
    """
    roles = check_options(engines, data, heldout_of, report_of, calibrate, fit_merge)
    engine = Engine(models_dir, routing=roles[0], device=device, precision=precision, threads=threads, tiling=True)
    try:
        specs = input_specs(data, split, heldout_of, report_of)
        report: dict = {"set": "; ".join(name for name, _, _, _ in specs), "models": str(models_dir),
                        "command": "sixview eval " + shlex.join(sys.argv[2:]), "roles": {},
                        "sets": [{"path": str(src.path), "split": sp, "heldout_of": heldout_of, "report_of": report_of}
                                 for _, src, sp, _ in specs]}
        curves, calib = {}, {}
        unlabelled = parse_classes(unlabelled_classes) or ()
        sets = {role: combine_sets([load_set(src, sp, engine.model(role).meta.classes, limit, unlabelled, only)
                                    for _, src, sp, only in specs]) for role in roles}
        report["inputs"] = check_inputs([src for _, src, _, _ in specs], sets, engine, allow_missing,
                                        ignore_class, ignore_unknown_classes)
        for role, ds in sets.items():
            vs, valid, s_on, curves[role] = score_role(engine, role, ds, batch, report)
            if calibrate:
                calib[role] = calibrate_role(role, engine.model(role).meta, ds, vs, valid, s_on, fit_merge)
        if calib:
            report["calibration"] = {role: {**c, "sets": [{k: v for k, v in p.items() if k != "ids"}
                                                          for p in c["sets"]]} for role, c in calib.items()}
        failed = max(report["roles"].values(), key=lambda r: r["failed"])
        report["inputs"].update(failed=failed["failed"], failed_examples=failed["failed_examples"])
    except (*SETUP_ERRORS, UserError) as e:
        raise setup_error(e) from None
    out_dir = out_dir or Path("eval_out") / default_name(data, heldout_of, report_of)
    for p in write_report(report, curves, out_dir):
        click.echo(f"wrote {p}")
    click.echo("\n".join(summary_lines(report)).strip())
    refused = report_failed(report["inputs"], allow_missing)
    if calibrate and refused:
        click.echo("calibrated models not written: images failed (see above)", err=True)
    elif calibrate:
        write_calibrated(models_dir, models_dir if in_place else (calibrated_out or models_dir / "calibrated"),
                         calib, report["set"])
    if refused:
        sys.exit(1)


def check_options(engines: str, data: tuple[str, ...], heldout_of: str | None, report_of: str | None,
                  calibrate: bool, fit_merge: bool) -> list[str]:
    """The roles to score; a usage error for options that exclude each other."""
    roles = [r.strip() for r in engines.split(",") if r.strip()]
    if not roles or set(roles) - set(ROLES):
        raise click.UsageError("--engines takes standard, hd or both")
    if heldout_of and report_of:
        raise click.UsageError("--heldout-of and --report-of exclude each other: score one part of the run at a time")
    if (heldout_of or report_of) and data:
        raise click.UsageError(f"--{'heldout' if heldout_of else 'report'}-of RUN names its own sets: leave out --data")
    if report_of and calibrate:
        raise click.UsageError("--report-of: report photos must choose nothing; calibrate on --heldout-of RUN")
    if fit_merge and not calibrate:
        raise click.UsageError("--fit-merge fits the merge with the thresholds: add --calibrate")
    return roles


def score_role(engine: Engine, role: str, ds: LabelledSet, batch: int, report: dict) -> tuple:
    """Score one role on its set into `report`: (view scores, valid rows, merged scores, PR curve data)."""
    meta = engine.model(role).meta
    res, vs = evaluate_role(engine, role, ds, batch)
    valid = ~np.isnan(vs[:, 0, 0])
    res["calibration_overlap"] = calibration_overlap(meta.provenance, ds, valid)
    report["roles"][role] = res
    on = engine.rule(role).decide_views(vs[valid])  # the runtime's decisions, tiling on
    if groups := group_breakdown(ds, valid, on, meta.classes):  # the set's groups.csv or species.csv
        report.setdefault("groups", {})[role] = groups
    cols = ds.known
    names = [c for c, k in zip(meta.classes, cols, strict=True) if k]
    s_on = on.scores  # the runtime's merged scores
    y, mask = ds.targets[valid], ds.mask[valid]
    curve = (y[:, cols], s_on[:, cols], names, mask[:, cols])
    report["inputs"]["no_positives"] = [c for c, n in zip(names, (y[:, cols] * mask[:, cols]).sum(axis=0),
                                                           strict=True) if not n]
    report.update(images=res["images"], classes=names,
                  masked=[c for c, k in zip(meta.classes, cols, strict=True) if not k])
    cal = meta.provenance.get("calibration", {}).get("set")
    if cal:
        report["calibrated_on"] = cal
    return vs, valid, s_on, curve


def calibrate_role(role: str, meta: ModelMeta, ds: LabelledSet, vs: np.ndarray, valid: np.ndarray,
                   s_on: np.ndarray, fit_merge: bool) -> dict:
    """Thresholds, then the presence threshold (and first, with `fit_merge`, the merge) chosen on the scored rows."""
    y, mask = ds.targets[valid], ds.mask[valid]
    sets_used, merge, s_cal = calibration_sets(ds, valid), None, s_on
    if fit_merge:  # the merge first, then the thresholds on its merged scores
        merge = fit_logit_linear(vs[valid], y, mask, meta.classes, fitted_on(sets_used))
        s_cal = merged_scores(vs[valid], merge, meta.classes)
    out = D.calibrate(y, mask, s_cal, meta.classes, meta.thresholds, meta.fallback_min_score,
                      meta.presence_threshold, s_before=s_on)
    out.update(sets=sets_used, merge=merge or meta.merge, merge_fitted=merge is not None)
    if merge is not None:
        out["merge_own_bias"] = own_bias(y, mask, meta.classes, view_scores=vs[valid])
        kept = [c for c, n in zip(meta.classes, ((y >= 0.5) & mask).sum(axis=0), strict=True) if not n]
        out["merge_kept_thresholds"] = kept
        if kept:
            click.echo(f"warning: --fit-merge: {role}: no calibration photo is labelled with "
                       f"{', '.join(kept)}: they keep the threshold chosen for the model's previous "
                       "merge (their bias is the pooled one)", err=True)
    return out


def write_calibrated(models_dir: Path, dest_dir: Path, calib: dict, set_name: str) -> None:
    """Write each role's files with the calibrated thresholds (and merge) to `dest_dir`, and say so."""
    for role, cal in calib.items():
        for src in role_files(models_dir, role):
            write_thresholds(src, dest_dir / src.name, cal["thresholds"], set_name,
                             presence_threshold=cal["presence_threshold"], sets=cal["sets"], method=cal["rule"],
                             merge=cal["merge"] if cal["merge_fitted"] else None)
        before, after = cal["class_thresholds"], cal["after"]
        click.echo(f"calibrated {role} on {set_name}: "
                   + ", ".join(f"{c} {t:.2f}" for c, t in cal["thresholds"].items())
                   + f"; presence {cal['presence_threshold']:.4g} (label-free photos given a label or guess, "
                   f"percent: {pct(before['label_free_confident_or_guess'])} -> "
                   f"{pct(after['label_free_confident_or_guess'])}); merge {merge_text(cal['merge'])}"
                   f" -> {dest_dir}")


def input_specs(data: tuple[str, ...], split: str | None, heldout_of: str | None,
                report_of: str | None = None) -> list[tuple[str, DataSource, str, set[str] | None]]:
    """(report name, source, split, ids or None) per set to score: every --data, or the sets
    RUN/splits.json holds out (or sets aside for reporting), or the validation images of a training run."""
    if heldout_of or report_of:
        held = run_part(heldout_of or report_of, "heldout" if heldout_of else "report")
        wanted = [(path, split or sp, only) for path, sp, only in held]
    elif data:
        wanted = [(d, split, None) for d in data]
    else:
        raise click.UsageError("--data (or --heldout-of RUN, or --report-of RUN) is required")
    part = f", held out by {heldout_of}" if heldout_of else f", report part of {report_of}" if report_of else ""
    out = []
    for path, sp, only in wanted:
        source = open_source(path, strict=False)
        if sp is None:
            sp = source.splits[0] if only is not None else ("test" if "test" in source.splits else source.splits[0])
        if sp not in source.splits:
            raise click.UsageError(f"--split {sp}: {path} has {', '.join(source.splits)}")
        out.append((f"{path} ({sp}{part})", source, sp, only))
    return out


def default_name(data: tuple[str, ...], heldout_of: str | None, report_of: str | None = None) -> str:
    """The report folder's default name: the (first) set's, or the run's."""
    if heldout_of or report_of:
        return Path(str(heldout_of or report_of).rstrip("/")).name + ("-heldout" if heldout_of else "-report")
    return Path(str(data[0]).rstrip("/")).name


def calibration_sets(ds: LabelledSet, valid: np.ndarray) -> list[dict]:
    """Which sets and ids (the scored ones) chose the thresholds, for the calibrated files' provenance."""
    out = []
    for part, rows in zip(ds.parts, ds.part_rows(), strict=True):
        ids = [i for i, ok in zip(part.ids, valid[rows], strict=True) if ok]
        out.append({"path": part.path, "split": part.split, "heldout": part.heldout, "images": len(ids),
                    "ids_sha256": ids_sha256(ids), "ids": ids})
    return out


def fitted_on(sets: list[dict]) -> str:
    """The fitted merge's `fitted_on`: per set, its path and split, the images and the sha256 of
    their sorted ids (the thresholds' provenance, `calibration.sets`, lists the ids themselves)."""
    return "; ".join(f"{p['path']} ({p['split']}{', held out' if p['heldout'] else ''}): {p['images']} images, "
                     f"ids sha256 {p['ids_sha256']}" for p in sets)


def calibration_overlap(provenance: dict, ds: LabelledSet, valid: np.ndarray) -> int | None:
    """How many scored images chose the model's thresholds (None when its provenance lists none)."""
    sets = provenance.get("calibration", {}).get("sets")
    if not isinstance(sets, list):
        return None
    chosen = {(str(s.get("path")), str(s.get("split")), i) for s in sets if isinstance(s, dict)
              for i in s.get("ids") or []}
    return sum((part.path, part.split, i) in chosen for part, rows in zip(ds.parts, ds.part_rows(), strict=True)
               for i, ok in zip(part.ids, valid[rows], strict=True) if ok)
