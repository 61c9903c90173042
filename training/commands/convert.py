"""Click command `sixview convert` (loaded lazily by edge.cli): run folder -> verified ONNX files."""

from __future__ import annotations

import json
import os
from pathlib import Path

# Before anything imports protobuf: tf2onnx needs less than half the memory with the
# pure-Python backend (see convert/export.py).
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import click

from edge.metadata import ROLES, MetadataError
from training.errors import UserError


def _thresholds_from(path: Path, classes: list[str]) -> dict[str, float]:
    """Per-class thresholds from a JSON file ({class: t} or {"thresholds": {...}}) or an ONNX
    model's metadata; classes not in the model are ignored, missing ones keep the default."""
    if path.suffix == ".onnx":
        import onnx

        from convert.metadata import read_meta

        found = read_meta(onnx.load(str(path), load_external_data=False), str(path)).thresholds
    else:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: not a readable JSON file ({e})") from None
        found = data.get("thresholds", data) if isinstance(data, dict) else None
        if not isinstance(found, dict) or not all(isinstance(v, int | float) for v in found.values()):
            raise UserError(f"{path}: expected {{class: threshold}} or {{\"thresholds\": {{...}}}}")
    out = {c: float(t) for c, t in found.items() if c in classes}
    if not out:
        raise UserError(f"{path}: no thresholds for any of the model's classes")
    if any(not 0.0 <= t <= 1.0 for t in out.values()):
        raise UserError(f"{path}: thresholds must lie in [0, 1]")
    return out


def _read_config(run_dir: Path, checkpoint: str) -> dict:
    """The run's config.json, after checking the folder holds the checkpoint (no TensorFlow)."""
    cfg = run_dir / "config.json"
    if not cfg.is_file():
        raise UserError(f"{run_dir}: not a run folder (no config.json)")
    if not (run_dir / f"{checkpoint}.keras").is_file():
        raise UserError(f"{run_dir}: no checkpoint {checkpoint}.keras")
    try:
        config = json.loads(cfg.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{cfg}: unreadable ({e})") from None
    if not isinstance(config, dict) or not isinstance(config.get("classes"), list):
        raise UserError(f"{cfg}: no 'classes' list")
    return config


@click.command("convert")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="Which engine the model is: standard (CIFAR-like) or hd (real photos).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("models"), show_default=True, help="Folder for the ONNX files.")
@click.option("--opset", type=click.IntRange(13, 18), default=17, show_default=True)
@click.option("--checkpoint", default="best", show_default=True,
              help="Which checkpoint of the run: best or last.")
@click.option("--verify-images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of real images for the parity check "
                                 "(default: images from the run's own data).")
@click.option("--verify-count", type=click.IntRange(4, 1024), default=32, show_default=True)
@click.option("--int8/--no-int8", default=False, show_default=True,
              help="Also build a calibrated INT8 file for CPUs (kept only if measurably faster).")
@click.option("--calibration-count", type=click.IntRange(16, 5000), default=300, show_default=True,
              help="Training images used to calibrate INT8.")
@click.option("--thresholds-from", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Per-class thresholds: JSON {class: t} or a sixview ONNX file.")
@click.option("--input-size", default=None,
              help="Export at this input (N or HxW) instead of the run's: the same weights (every "
                   "architecture here ends in global pooling); a CNN often gains from testing above its "
                   "training size.")
def convert(run_dir: Path, role: str, out_dir: Path, opset: int, checkpoint: str,
            verify_images: Path | None, verify_count: int, int8: bool, calibration_count: int,
            thresholds_from: Path | None, input_size: str | None) -> None:
    """Convert a training run into verified FP32/FP16 ONNX files with metadata."""
    try:
        config = _read_config(run_dir, checkpoint)
        thresholds = _thresholds_from(thresholds_from, config["classes"]) if thresholds_from else None
        from training.commands.train import parse_size
        size_wanted = parse_size(input_size, "") if input_size else None
    except (UserError, MetadataError) as e:
        raise click.ClickException(str(e)) from None

    from convert.api import convert_model
    from convert.export import ConversionError
    from convert.metadata import build_provenance
    from convert.verify import VerificationError, images_from_dir
    from training.fit.run_folder import load_run, sample_images

    try:
        run = load_run(run_dir, which=checkpoint, input_size=size_wanted)
        classes, size = run.classes, run.input_size
        if verify_images is not None:
            images = images_from_dir(verify_images, size, verify_count)
        else:
            try:
                images = sample_images(run.config, verify_count, seed=0)
            except UserError as e:
                raise UserError(f"{e} (the run's data is needed for the parity check; "
                                "or pass --verify-images DIR)") from None
        calib = None
        if int8:
            calib = sample_images(run.config, calibration_count, seed=1,
                                  split=run.config.get("train_split"))
        prov = build_provenance(run.checkpoint, run.config, run.metrics)
        click.echo(f"converting {run.checkpoint} ({run.config.get('arch')}, {len(classes)} classes, "
                   f"{size[0]}x{size[1]}) -> {out_dir}/{role}.*", err=True)
        written = convert_model(run.model, classes, size, role, out_dir, prov, images,
                                int8_calibration=calib, thresholds=thresholds, opset=opset)
    except VerificationError as e:
        click.echo(f"Error: {e}", err=True)
        raise SystemExit(1) from None
    except (UserError, MetadataError, ConversionError, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(written.report.summary(), err=True)
    g = written.graph
    click.echo(f"graph: {g['nodes_before']} -> {g['nodes_after']} nodes "
               f"({g['layernorm']} LayerNorm, {g['gelu']} GELU fused)", err=True)
    if written.int8 is not None:
        click.echo(f"int8: {'kept' if written.int8['kept'] else 'left out'} "
                   f"({written.int8['decision']})", err=True)
    for p in written.paths:
        click.echo(f"{p}  {p.stat().st_size / 1e6:.1f} MB")
