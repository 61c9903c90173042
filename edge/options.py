"""Command-line options shared by the runtime commands, and their error handling."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import MAX_PIXELS
from .engine import DEFAULT_MODELS, ROUTINGS, Engine
from .model import PRECISION_CHOICES
from .providers import DEVICES


def engine_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--models --engine --device --precision --threads --tiling --threshold --max-pixels --guess-in-labels."""
    opts = [
        click.option("--models", "models_dir", type=click.Path(file_okay=False, path_type=Path),
                     default=DEFAULT_MODELS, envvar="SIXVIEW_MODELS", show_default="the shipped models/",
                     help="Folder with standard*.onnx and hd*.onnx (or env SIXVIEW_MODELS)."),
        click.option("--engine", type=click.Choice(ROUTINGS), default="auto", show_default=True,
                     help="auto: thumbnails (short side <= 64 px) -> standard, photos -> hd."),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                     help="auto: a GPU that starts, else OpenVINO (if installed), else ONNX Runtime's CPU "
                          "provider; an explicit device that does not start is an error."),
        click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto",
                     show_default=True, help="auto: FP16 on CUDA/TensorRT; on OpenVINO BF16 when the CPU has it "
                          "natively and the model's accuracy gate passed, else FP32; INT8 (if shipped) or FP32 "
                          "on ONNX Runtime's CPU provider. bf16: OpenVINO only, native BF16 CPUs only."),
        click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Inference threads (0: the backend's default, one per physical core)."),
        click.option("--tiling/--no-tiling", default=True, show_default=True,
                     help="Six views (whole, four corners, centre) or the whole image only."),
        click.option("--threshold", type=click.FloatRange(0, 1), default=None,
                     help="One threshold for every class, overriding the model's."),
        click.option("--max-pixels", type=click.IntRange(min=1), default=MAX_PIXELS, show_default=True,
                     help="Images whose header declares more pixels are refused before decoding "
                          "(an error record), so no file can take the machine's memory."),
        click.option("--guess-in-labels", is_flag=True,
                     help="The reference system's rule: when no class passes its threshold, the top class, "
                          "if above the fallback score, is put in labels (default: kept apart in 'guess')."),
    ]
    return functools.reduce(lambda g, o: o(g), reversed(opts), f)


def make_engine(models_dir: Path, engine: str, device: str, precision: str, threads: int,
                tiling: bool, threshold: float | None, max_pixels: int = MAX_PIXELS,
                guess_in_labels: bool = False) -> Engine:
    """An Engine from the shared options (`--engine` is its routing)."""
    return Engine(models_dir, routing=engine, device=device, precision=precision, threads=threads,
                  tiling=tiling, threshold=threshold, max_pixels=max_pixels, guess_in_labels=guess_in_labels)


class SetupError(click.ClickException):
    """A model, provider or output that stops a command: one line, exit code 2."""

    exit_code = 2


def setup_error(e: Exception) -> SetupError:
    """A setup error (model, metadata, provider, output) as one clean line, exit code 2."""
    return SetupError(str(e))
