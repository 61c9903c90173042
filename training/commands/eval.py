"""`sixview eval`: score the ONNX models on a labelled set (through the edge runtime)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
import numpy as np

from edge.engine import Engine
from edge.errors import SETUP_ERRORS
from edge.metadata import PRECISIONS, ROLES
from edge.providers import DEVICES
from training.data.datasets import open_source
from training.data.labels import parse_classes
from training.errors import UserError
from training.eval import metrics as M
from training.eval.calibrate import role_files, write_thresholds
from training.eval.report import write_report
from training.eval.scoring import evaluate_role, heldout_ids, load_set


@click.command("eval")
@click.argument("models_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--data", default=None,
              help="Labelled set: folder with labels.csv (+ boxes.csv), or a CIFAR-10 folder/archive.")
@click.option("--split", default=None, help="Split to score (default: test if the set has one, else all).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score an evenly spaced subset of N images.")
@click.option("--heldout-of", type=click.Path(file_okay=False, exists=True), default=None,
              help="Score only the images this training run held out for validation (its --data and split).")
@click.option("--engines", default=",".join(ROLES), show_default=True, help="Which models to score.")
@click.option("--unlabelled-classes", default=None,
              help="Classes this set does not label (masked); default: model classes absent from the set.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report folder (default: eval_out/<set name>).")
@click.option("--calibrate", is_flag=True, help="Choose per-class thresholds maximising F1 on this set.")
@click.option("--calibrated-out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where calibrated model files go (default: MODELS_DIR/calibrated).")
@click.option("--in-place", is_flag=True, help="With --calibrate: rewrite the files in MODELS_DIR.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(("auto", *PRECISIONS)), default="fp32", show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0)
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True, help="Images per model call.")
def eval_cmd(models_dir: Path, data: str | None, split: str | None, limit: int | None, heldout_of: str | None,
             engines: str,
             unlabelled_classes: str | None, out_dir: Path | None, calibrate: bool, calibrated_out: Path | None,
             in_place: bool, device: str, precision: str, threads: int, batch: int) -> None:
    """Score the models in MODELS_DIR on a labelled set: mAP and per-class AP, precision/recall/F1
    at the model thresholds, exact match, top-1, recall by object size, each with tiling on and off.

    Writes report.md, report.json and pr.png. With --calibrate, also writes models whose
    thresholds maximise F1 on this set (never report calibrated figures on the calibrating set).
    """
    roles = [r.strip() for r in engines.split(",") if r.strip()]
    if not roles or set(roles) - set(ROLES):
        raise click.UsageError("--engines takes standard, hd or both")
    engine = Engine(models_dir, routing=roles[0], device=device, precision=precision, threads=threads, tiling=True)
    only = None
    try:
        if heldout_of:
            data, split, only = heldout_ids(heldout_of)
        if not data:
            raise click.UsageError("--data (or --heldout-of RUN) is required")
        source = open_source(data)
        split = split or ("test" if "test" in source.splits else source.splits[0])
        if split not in source.splits:
            raise click.UsageError(f"--split {split}: this set has {', '.join(source.splits)}")
        held = f", held out by {heldout_of}" if heldout_of else ""
        report: dict = {"set": f"{data} ({split}{held})", "models": str(models_dir),
                        "command": "sixview eval " + shlex.join(sys.argv[2:]), "roles": {}}
        curves, calib = {}, {}
        for role in roles:
            meta = engine.model(role).meta
            ds = load_set(source, split, meta.classes, limit, parse_classes(unlabelled_classes) or (), only)
            res, vs = evaluate_role(engine, role, ds, batch)
            report["roles"][role] = res
            names = [c for c, k in zip(meta.classes, ds.known, strict=True) if k]
            valid = ~np.isnan(vs[:, 0, 0])
            y, s = ds.targets[valid][:, ds.known], np.nanmax(vs[valid], axis=1)[:, ds.known]
            curves[role] = (y, s, names)
            report.update(images=res["images"], classes=names,
                          masked=[c for c, k in zip(meta.classes, ds.known, strict=True) if not k])
            cal = meta.provenance.get("calibration", {}).get("set")
            if cal:
                report["calibrated_on"] = cal
            if calibrate:
                default = [meta.thresholds[c] for c in names]
                calib[role] = dict(zip(names, M.best_f1_thresholds(y, s, default), strict=True))
    except SETUP_ERRORS as e:
        raise click.UsageError(str(e)) from None
    except UserError as e:
        raise click.UsageError(str(e)) from None
    out_dir = out_dir or Path("eval_out") / Path(str(data).rstrip("/")).name
    for p in write_report(report, curves, out_dir):
        click.echo(f"wrote {p}")
    click.echo((out_dir / "report.md").read_text().split("## Standard vs HD")[0].split("## Summary")[1].strip())
    if calibrate:
        dest_dir = models_dir if in_place else (calibrated_out or models_dir / "calibrated")
        for role, th in calib.items():
            for src in role_files(models_dir, role):
                write_thresholds(src, dest_dir / src.name, th, report["set"])
            click.echo(f"calibrated {role} on {report['set']}: "
                       + ", ".join(f"{c} {t:.2f}" for c, t in th.items()) + f" -> {dest_dir}")
