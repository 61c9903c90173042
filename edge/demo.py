"""`make demo`: scan a folder of sample photos with the shipped models.

Default folder: the sample photos that scikit-image ships (a cat, an
astronaut, coffee, a rocket, a motorcycle, and odd formats: grayscale,
1-bit, multi-page TIFF, GIF).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import click

from .engine import DEFAULT_MODELS, Engine
from .errors import SETUP_ERRORS
from .inputs import collect_keyed
from .scan import scan
from .sinks import JsonlSink


def skimage_samples() -> Path | None:
    """scikit-image's bundled sample-photo folder, found without importing it."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


@click.command()
@click.option("--images", default="", help="Folder to scan (default: scikit-image's sample photos).")
@click.option("--models", "models_dir", type=click.Path(path_type=Path), default=DEFAULT_MODELS)
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo_out"))
def main(images: str, models_dir: Path, out: Path) -> None:
    """Scan the sample folder and print the summary."""
    engine = Engine(models_dir, device="cpu")
    try:
        engine.check()
    except SETUP_ERRORS as e:
        click.echo(f"demo: {e}\n"
                   f"demo: {models_dir} holds no trained models yet; produce them with `make models` "
                   "(trains, adapts and converts on ../shared/data; see docs/training.md), "
                   "or pass --models DIR with standard.onnx and hd.onnx.", err=True)
        sys.exit(2)
    folder = Path(images) if images else skimage_samples()
    if folder is None or not folder.is_dir():
        raise click.UsageError(f"no image folder to scan: {images or 'scikit-image is not installed'}")
    found = collect_keyed([str(folder)])
    results = out / "results.jsonl"
    with JsonlSink(results, overwrite=True) as sink:  # the demo's own output folder: a rerun replaces it
        summary = scan(list(found), engine, sink.write, out / "annotated", batch_images=8, workers=2,
                       names=found)
    click.echo(f"scanned {folder}")
    click.echo(summary.text())
    click.echo(f"records: {results}\nannotated images: {out / 'annotated'}")


if __name__ == "__main__":
    main()
