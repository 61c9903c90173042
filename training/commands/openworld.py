"""`sixview openworld`: teach an HD model to say "none of these" with what its ImageNet backbone knows."""

from __future__ import annotations

from pathlib import Path

import click

from training.errors import UserError


@click.command("openworld")
@click.option("--hd", "hd_onnx", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The calibrated HD model (FP32 .onnx) whose adaptation run split --data.")
@click.option("--data", required=True, multiple=True,
              help="A photo set (repeatable). First the HD adaptation's sets, in its order; then new sets.")
@click.option("--new-report", type=click.FloatRange(0, 1, max_open=True), default=0.3, show_default=True,
              help="The share of each set the HD model never saw that is set aside for reporting only.")
@click.option("--fit-share", multiple=True, metavar="SET=FRACTION",
              help="Fit only this share of a large set's fit part (repeatable; e.g. imagenette_train=0.5).")
@click.option("--teach-every", type=click.IntRange(1), default=3, show_default=True,
              help="The ImageNet teacher sees one fitted photo in N (its output is what is distilled).")
@click.option("--one-pass", type=click.IntRange(1), default=None, metavar="GRID",
              help="Fit the head for the HD graph rewritten to see a frame once (input GRID x 32 px, the views "
                   "pooled from its feature map: convert.onepass; 10 fits the 60% views).")
@click.option("--tune-head", is_flag=True,
              help="First fine-tune the HD head (LayerNorm, Dense, GELU, Dense) on the fit parts' views, stopped on "
                   "the held-out photos' loss (for a --one-pass graph, whose views' features are not those it learnt).")
@click.option("--distill", "distill_epochs", type=click.IntRange(0), default=0, show_default=True, metavar="EPOCHS",
              help="With --one-pass: first train the backbone's convolutions for EPOCHS so that each window of the "
                   "frame's feature map gives the features and logits the per-view graph gives the view alone (the "
                   "fit photos teach, the held-out photos choose the epoch; resumes from RUN/distill/).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: splits.json, evidence cache, head.json, onnx/.")
def openworld(hd_onnx: Path, data: tuple[str, ...], new_report: float, fit_share: tuple[str, ...],
              teach_every: int, one_pass: int | None, tune_head: bool, distill_epochs: int, out: Path) -> None:
    """Fit an open-world head on the HD model's frozen features: a per-view "this is something else" logit
    distilled from the backbone's ImageNet classifier (foxes, whales, starfish are none of the classes), and
    a per-class gate that lowers a class's score where it fires, fitted with photos of other animals as hard
    negatives. Writes RUN/onnx/hd.onnx (+ FP16, and the unchanged Standard files); then calibrate with
    `sixview eval RUN/onnx --heldout-of RUN --engines hd --calibrate --fit-merge --calibrated-out DIR`."""
    from edge.metadata import ModelMeta
    from edge.onnx_props import read_props
    from training.openworld.plan import SetPlan
    from training.openworld.run import run_open

    shares = {}
    for item in fit_share:
        name, _, value = item.partition("=")
        try:
            shares[name] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected SET=FRACTION", param_hint="--fit-share") from None
    meta = ModelMeta.from_props(read_props(hd_onnx), str(hd_onnx))
    seen = {Path(p).name for p in meta.provenance.get("training_data", [])}
    plans = [SetPlan(p, 0.2, 0.1 if Path(p).name in seen else new_report, shares.get(Path(p).name, 1.0))
             for p in data]
    if distill_epochs and not one_pass:
        raise click.BadParameter("distils for a one-pass graph: give --one-pass GRID too", param_hint="--distill")
    try:
        report = run_open(hd_onnx, plans, out, teach_every, one_pass=one_pass, tune=tune_head,
                          distill_epochs=distill_epochs)
    except ValueError as e:
        raise UserError(str(e)) from e
    for name, fig in report["heldout_check"]["both"].items():
        b, a = fig["before"], fig["after"]
        click.echo(f"{name}: label-free labelled {b['labelled_free']:.3f} -> {a['labelled_free']:.3f}, "
                   f"recall {b['recall']:.3f} -> {a['recall']:.3f} (held-out photos, thresholds of best F1 over them)")
    moved = report["held_logit_change"]
    click.echo(f"the head adds {report['macs_per_view']:+,} multiply-adds a view "
               f"({len(report['pruned_units'] or [])} hidden units of the HD head pruned to pay for it; held-out "
               f"logits moved {moved['mean']:.4f} on average, {moved['max']:.3f} at most)")
    click.echo(f"wrote {out / 'onnx'}")
