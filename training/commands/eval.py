"""`sixview eval`: score the ONNX models on labelled sets (through the edge runtime), calibrate them."""

from __future__ import annotations

import hashlib
import shlex
import sys
from pathlib import Path

import click
import numpy as np

from edge.engine import Engine
from edge.errors import SETUP_ERRORS
from edge.merge import merged_scores
from edge.metadata import PRECISIONS, ROLES
from edge.options import setup_error
from edge.providers import DEVICES
from training.data.datasets import DataSource, norm_class, open_source
from training.data.labels import parse_classes
from training.errors import UserError
from training.eval import decision as D
from training.eval.calibrate import role_files, write_thresholds
from training.eval.merge_fit import fit_logit_linear, own_bias
from training.eval.report import merge_text, pct, write_report
from training.eval.scoring import evaluate_role
from training.eval.sets import LabelledSet, combine_sets, load_set, run_part

EXAMPLES = 5  # ids (or names) shown per problem on stderr and in the report


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

    Nothing is left out silently. Exit code 0 when every listed image was scored and every label
    names a class of its set; 1 when listed images are missing, unreadable or undecodable (unless
    --allow-missing) or labels name other classes (unless --ignore-class/--ignore-unknown-classes);
    2 for a usage, model or data error, including a set with nothing to score.
    """
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
            meta = engine.model(role).meta
            res, vs = evaluate_role(engine, role, ds, batch)
            valid = ~np.isnan(vs[:, 0, 0])
            res["calibration_overlap"] = calibration_overlap(meta.provenance, ds, valid)
            report["roles"][role] = res
            cols = ds.known
            names = [c for c, k in zip(meta.classes, cols, strict=True) if k]
            s_on = merged_scores(vs[valid], meta.merge, meta.classes)  # the model's own merge, as the runtime
            y, mask = ds.targets[valid], ds.mask[valid]
            curves[role] = (y[:, cols], s_on[:, cols], names, mask[:, cols])
            report["inputs"]["no_positives"] = [c for c, n in zip(names, (y[:, cols] * mask[:, cols]).sum(axis=0),
                                                                   strict=True) if not n]
            report.update(images=res["images"], classes=names,
                          masked=[c for c, k in zip(meta.classes, cols, strict=True) if not k])
            cal = meta.provenance.get("calibration", {}).get("set")
            if cal:
                report["calibrated_on"] = cal
            if calibrate:
                sets_used, merge, s_cal = calibration_sets(ds, valid), None, s_on
                if fit_merge:  # the merge first, then the thresholds on its merged scores
                    merge = fit_logit_linear(vs[valid], y, mask, meta.classes, fitted_on(sets_used))
                    s_cal = merged_scores(vs[valid], merge, meta.classes)
                calib[role] = D.calibrate(y, mask, s_cal, meta.classes, meta.thresholds, meta.fallback_min_score,
                                          meta.presence_threshold, s_before=s_on)
                calib[role].update(sets=sets_used, merge=merge or meta.merge, merge_fitted=merge is not None)
                if merge is not None:
                    calib[role]["merge_own_bias"] = own_bias(y, mask, meta.classes, view_scores=vs[valid])
                    kept = [c for c, n in zip(meta.classes, ((y >= 0.5) & mask).sum(axis=0), strict=True) if not n]
                    calib[role]["merge_kept_thresholds"] = kept
                    if kept:
                        click.echo(f"warning: --fit-merge: {role}: no calibration photo is labelled with "
                                   f"{', '.join(kept)}: they keep the threshold chosen for the model's previous "
                                   "merge (their bias is the pooled one)", err=True)
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
    click.echo((out_dir / "report.md").read_text().split("## Standard vs HD")[0].split("## Summary")[1].strip())
    refused = report_failed(report["inputs"], allow_missing)
    if calibrate and refused:
        click.echo("calibrated models not written: images failed (see above)", err=True)
    elif calibrate:
        dest_dir = models_dir if in_place else (calibrated_out or models_dir / "calibrated")
        for role, cal in calib.items():
            for src in role_files(models_dir, role):
                write_thresholds(src, dest_dir / src.name, cal["thresholds"], report["set"],
                                 presence_threshold=cal["presence_threshold"], sets=cal["sets"], method=cal["rule"],
                                 merge=cal["merge"] if cal["merge_fitted"] else None)
            before, after = cal["class_thresholds"], cal["after"]
            click.echo(f"calibrated {role} on {report['set']}: "
                       + ", ".join(f"{c} {t:.2f}" for c, t in cal["thresholds"].items())
                       + f"; presence {cal['presence_threshold']:.4g} (label-free photos given a label or guess, "
                       f"percent: {pct(before['label_free_confident_or_guess'])} -> "
                       f"{pct(after['label_free_confident_or_guess'])}); merge {merge_text(cal['merge'])}"
                       f" -> {dest_dir}")
    if refused:
        sys.exit(1)


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
                    "ids_sha256": hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest(), "ids": ids})
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


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _examples(pairs: list, more: int) -> str:
    return ", ".join(f"{i} ({why})" for i, why in pairs[:EXAMPLES]) + (f", and {more - EXAMPLES} more"
                                                                        if more > EXAMPLES else "")


def check_inputs(sources: list[DataSource], sets: dict[str, LabelledSet], engine: Engine, allow_missing: bool,
                 ignore: tuple[str, ...], ignore_unknown: bool) -> dict:
    """Say on stderr which listed files are missing and which label names are not classes of their
    set; exit 1 (before scoring) unless allowed or ignored. Returns the report's `inputs` section."""
    first = next(iter(sets.values()))
    model_classes = {c for role in sets for c in engine.model(role).meta.classes}
    vocabularies = [set(src.classes) if src.declared else model_classes for src in sources]
    names = {norm_class(x) for v in ignore for x in v.split(",") if x.strip()}
    declared = [src.declared for src in sources]
    if names & set.intersection(*vocabularies):  # a class of every set: nowhere a label name to ignore
        name = sorted(names & set.intersection(*vocabularies))[0]
        of = ("this set" if len(sources) == 1 else "every set") if all(declared) else \
            "the models (this set has no classes.txt)" if len(sources) == 1 else "every set (or the models)"
        raise click.UsageError(f"--ignore-class {name}: {name} is a class of {of}; --ignore-class is for label "
                               "names that are not (--unlabelled-classes leaves a class out of scoring)")
    unknown: dict[str, list[str]] = {}
    for ds in sets.values():
        for c, ids in ds.unknown.items():
            unknown.setdefault(c, ids)
    for name in sorted(names - set(unknown)):
        click.echo(f"note: --ignore-class {name}: no label of this set uses it", err=True)
    ignored = {c: ids for c, ids in unknown.items() if ignore_unknown or c in names}
    left = {c: ids for c, ids in unknown.items() if c not in ignored}
    stop = False
    if first.missing:
        verdict = "left out (--allow-missing)" if allow_missing else "nothing scored"
        level = "warning" if allow_missing else "error"
        click.echo(f"{level}: {len(first.missing)} of {_n(first.listed, 'listed image')} missing or unreadable, "
                   f"{verdict}: {_examples(first.missing, len(first.missing))}", err=True)
        stop = not allow_missing
    the = "the" if len(sources) == 1 else "its"
    what = (f"not in {the} set's classes.txt" if all(declared) else
            f"not a class of the models, and {the} set has no classes.txt" if not any(declared) else
            "not in its set's classes.txt (or, for a set without one, not a class of the models)")
    if ignored:
        click.echo(f"warning: ignored {_n(len(ignored), 'label name')} ({what}): "
                   + ", ".join(f"{c} ({_n(len(ids), 'image')})" for c, ids in ignored.items()), err=True)
    if left:
        pairs = [(c, f"{_n(len(ids), 'image')}, e.g. {ids[0]}") for c, ids in left.items()]
        click.echo(f"error: {_n(len(left), 'label name')} {what}, nothing scored: {_examples(pairs, len(pairs))}",
                   err=True)
        stop = True
    if stop:
        hints = (["--allow-missing scores the rest"] if first.missing and not allow_missing else []) + (
            ["--ignore-class NAME (or --ignore-unknown-classes) drops such labels"
             + (", or add the names to classes.txt" if any(declared) else "")] if left else [])
        click.echo("; ".join(hints), err=True)
        sys.exit(1)
    unscored = list(dict.fromkeys(c for src in sources if src.declared for c in src.classes if c not in model_classes))
    return {"listed": first.listed, "missing": len(first.missing), "missing_examples": first.missing[:EXAMPLES],
            "allow_missing": allow_missing, "failed": 0, "failed_examples": [],
            "ignored_labels": {c: len(ids) for c, ids in ignored.items()},
            "unscored_classes": unscored}


def report_failed(inputs: dict, allow_missing: bool) -> bool:
    """Say on stderr which images failed to read or decode; True when that makes eval exit 1."""
    if not inputs["failed"]:
        return False
    verdict = "left out of the metrics (--allow-missing)" if allow_missing else \
        "counted as failed; the report is written, exit 1 (--allow-missing accepts them)"
    level = "warning" if allow_missing else "error"
    click.echo(f"{level}: {inputs['failed']} of {_n(inputs['listed'], 'listed image')} could not be read or "
               f"decoded, {verdict}: {_examples(inputs['failed_examples'], inputs['failed'])}", err=True)
    return not allow_missing
