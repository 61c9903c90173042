"""`sixview adapt`: fine-tune a Standard run into the HD model on real photos."""

from __future__ import annotations

import click

from training.errors import UserError


@click.command("adapt")
@click.option("--base", required=True, type=click.Path(file_okay=False, path_type=str),
              help="The Standard run folder (from `sixview train`).")
@click.option("--data", required=True, multiple=True,
              help="A photo set: folder with labels.csv (+ boxes.csv, classes.txt) or class folders. Repeatable: "
                   "several sets at once, each with its own known classes.")
@click.option("--val", multiple=True,
              help="A set held out whole for selection (repeatable). Default: --holdout of every --data set.")
@click.option("--holdout", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2, show_default=True,
              help="Fraction of every --data set held out (never trained on) to choose the epoch; listed in "
                   "splits.json for calibration (`sixview eval --heldout-of RUN --calibrate`).")
@click.option("--report", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              metavar="FRACTION",
              help="A further fraction of every --data set set aside: never trained on, never used to choose the "
                   "epoch or to calibrate, only for reporting (`sixview eval --report-of RUN`). --holdout + "
                   "--report must be under 1.")
@click.option("--balance/--no-balance", default=True, show_default=True,
              help="Give every set the same share of each epoch and draw rare classes more often.")
@click.option("--negatives/--no-negatives", default=True, show_default=True,
              help="Fit the photos that show none of a set's classes (all-zero targets: they teach \"none of "
                   "these\"), or leave them out of fitting (held-out and report parts stay the same).")
@click.option("--out", required=True, type=click.Path(path_type=str), help="Run folder for the HD model.")
@click.option("--input-size", default=None,
              help="N or H,W: adapt (and ship) HD at this input size; the base run's weights are rebuilt for it "
                   "(default: the base run's size).")
@click.option("--lr", type=float, default=1e-5, show_default=True, help="AdamW learning rate (tiny: keep features).")
@click.option("--schedule", type=click.Choice(["plateau", "cosine"]), default="plateau", show_default=True,
              help="plateau: halve the rate after two epochs without a better held-out mAP; cosine: linear "
                   "warm-up over --warmup-epochs, then cosine decay to 0 at the last epoch.")
@click.option("--warmup-epochs", type=click.FloatRange(0), default=0.0, show_default=True)
@click.option("--init-from", type=click.Path(exists=True, file_okay=False, path_type=str), default=None,
              help="Start from this adaptation run's best weights (rebuilt at --input-size) instead of --base's: "
                   "a longer or larger adaptation. It must have split the same sets the same way (checked); "
                   "--base stays the teacher and the 'before' of the report.")
@click.option("--epochs", type=int, default=15, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--freeze-stages", type=click.IntRange(0, 8), default=0, show_default=True,
              help="Freeze the stem and the first N-1 backbone stages (ConvNeXt has 4, EfficientNet-Lite0 7; "
                   "0: all layers trainable). Batch norms always stay frozen.")
@click.option("--distill-unlabelled/--mask-unlabelled", default=True, show_default=True,
              help="Classes the set does not label: targets are the base model's scores for the same crop "
                   "(learning without forgetting), or they are left out of the loss.")
@click.option("--ignore-class", "ignore_classes", multiple=True,
              help="A class the set labels but the model lacks, to drop (repeatable).")
@click.option("--unlabelled-classes", default=None,
              help="Comma-separated model classes the set does not label (masked); "
                   "default: model classes missing from the set's vocabulary.")
@click.option("--cifar", default=None,
              help="CIFAR-10 set for the forgetting check and --replay (default: the base run's data).")
@click.option("--replay", type=click.IntRange(0), default=0, show_default=True,
              help="Mix N CIFAR-10 training images into the fitted photos (one more set, all classes known) "
                   "so the model forgets less of what it learned first.")
@click.option("--patience", type=int, default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--mlflow-uri", default=None, help="MLflow tracking URI (default: local store; 'off' disables).")
@click.option("--cache-dir", default=None, help="Decoded-image cache (default ~/.cache/sixview).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out.")
def adapt(resume: bool, unlabelled_classes: str | None, ignore_classes: tuple[str, ...], input_size: str | None,
          **opts) -> None:
    """Fine-tune a Standard run on real photos into HD.

    Aligns every set's classes to the model's by name; a class a set does not
    label is distilled from the Standard model (or masked), never a negative,
    and photos with none of a set's classes teach "none of these". Keeps the
    epoch with the best six-view mAP on the held-out photos (splits.json), and
    reports before/after on them and on the CIFAR-10 test split (forgetting).
    With --report, part of every set chooses nothing and is only scored later
    (`sixview eval --report-of RUN`).
    """
    from training.commands.train import parse_size
    from training.data.labels import parse_classes
    from training.fit.adapt import AdaptConfig, run_adapt

    opts["data"], opts["val"] = list(opts["data"]), list(opts["val"])
    unlabelled = parse_classes(unlabelled_classes) if unlabelled_classes is not None else None
    try:
        cfg = AdaptConfig(**opts, ignore_classes=list(ignore_classes), unlabelled_classes=unlabelled,
                          input_size=parse_size(input_size, "") if input_size else None)
        m = run_adapt(cfg, resume=resume)
    except UserError as e:
        raise click.UsageError(str(e)) from None
    except KeyboardInterrupt:
        raise click.ClickException(f"interrupted: resume with `sixview adapt ... --out {cfg.out} --resume`") from None
    click.echo(f"held-out six-view mAP {100 * m['val_map_before']:.1f} -> {100 * m['val_map_after']:.1f}; "
               f"report: {cfg.out}/report.md")
