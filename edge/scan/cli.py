"""`sixview scan`: classify images in files and folders."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import SETUP_ERRORS
from ..inputs import collect_keyed, keep_shard
from ..options import engine_options, make_engine, setup_error
from ..sinks import done_paths, open_sinks
from . import check_folder
from . import scan as run_scan


@click.command("scan")
@click.argument("paths", nargs=-1, metavar="PATHS...")  # required: checked in scan (`--ray PATH`)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSONL results file (default: stdout).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a flat CSV (path, labels, guess, presence, one score column per class).")
@click.option("--annotate", "annotate_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write copies with labels and the winning views drawn into this folder.")
@click.option("--resume", is_flag=True,
              help="Continue --out: skip images that already have a result, retry the ones that failed.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing non-empty --out/--csv (without it, or --resume, the scan refuses).")
@click.option("--shard", default=None, metavar="I/N",
              help="Process only shard I of N (0-based), e.g. for array jobs. Membership depends on each "
                   "image's path relative to the folder given, so any working directory gives the same split.")
@click.option("--batch", "batch_images", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per ONNX Runtime call (six views each; 8 scanned voc07_val 1.6x faster than 1).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Decoding threads (decoding overlaps inference).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Scan on Ray (extra 'ray'): a local instance, or ADDRESS: auto, ray://host:port, host:port. "
                   "PATHS may then also be URIs (s3://bucket/photos).")
@click.option("--actors", type=click.IntRange(min=1), default=None,
              help="With --ray: model actors (default: one per GPU with a GPU --device, else one per CPU, "
                   "leaving one CPU to decoding).")
@click.option("--ray-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --ray: the per-block results and their manifest (default: OUT.blocks/).")
@click.option("--block-size", type=click.IntRange(min=1), default=None,
              help="With --ray: images per block, the unit of --resume (default 1000).")
@engine_options
def scan(paths: tuple[str, ...], out: Path | None, csv_path: Path | None, annotate_dir: Path | None,
         resume: bool, overwrite: bool, shard: str | None, batch_images: int, workers: int, ray_address: str | None,
         actors: int | None, ray_dir: Path | None, block_size: int | None, **engine_opts) -> None:
    """Classify images in PATHS (files, folders searched recursively, or globs).

    Writes one JSON record per image (labels, scores, winning views, timings,
    error). A bad file gets a record with its error and the scan goes on. Only
    regular files are read; images declaring more than --max-pixels are refused
    undecoded. Exit code 0 when every image was classified, 1 if any failed,
    2 for a usage, model or output error (raised before any output is touched
    where it can be), 130 when interrupted (--resume continues).
    """
    if ray_address is not None:
        _scan_on_ray(paths, ray_address, out=out, csv_path=csv_path, annotate_dir=annotate_dir, resume=resume,
                     overwrite=overwrite, shard=shard, batch_images=batch_images, actors=actors, ray_dir=ray_dir,
                     block_size=block_size, engine_opts=engine_opts)
        return
    if actors or ray_dir or block_size:
        raise click.UsageError("--actors, --ray-dir and --block-size go with --ray")
    found = _listing(paths, out, resume, overwrite, shard)
    files = list(found)
    skipped = 0
    if resume:
        done = done_paths(out)
        skipped = sum(f in done for f in files)
        files = [f for f in files if f not in done]
    if not files:
        click.echo(f"nothing to do: no images{' left' if skipped else ''} to scan", err=True)
        return
    engine = make_engine(**engine_opts)
    try:
        classes = engine.classes()  # models load (or fail) before any output is touched
        with open_sinks(out, csv_path, classes, resume=resume, overwrite=overwrite, retry=files,
                        ready=lambda: annotate_dir and check_folder(annotate_dir)) as write:
            summary = run_scan(files, engine, write, annotate_dir, batch_images, workers, found)
    except SETUP_ERRORS as e:
        raise setup_error(e) from None
    if skipped:
        click.echo(f"resumed: {skipped} images already done", err=True)
    click.echo(summary.text(), err=True)
    if out:
        click.echo(f"results: {out}", err=True)
    if annotate_dir:
        click.echo(f"annotated images: {annotate_dir}", err=True)
    if summary.interrupted:
        sys.exit(130)
    if summary.errors:
        sys.exit(1)


def _listing(paths: tuple[str, ...], out: Path | None, resume: bool, overwrite: bool,
             shard: str | None) -> dict[str, str]:
    """The files to scan (path -> its shard key, the path under its scan root; `--shard` applied), or a
    usage error."""
    if not paths:
        raise click.UsageError("Missing argument 'PATHS...'.")
    if resume and out is None:
        raise click.UsageError("--resume needs --out FILE")
    if resume and overwrite:
        raise click.UsageError("--resume keeps --out and --overwrite replaces it: choose one")
    try:
        return keep_shard(collect_keyed(paths), shard)
    except (FileNotFoundError, ValueError) as e:
        raise click.UsageError(str(e)) from None


def _scan_on_ray(paths: tuple[str, ...], address: str, *, annotate_dir: Path | None, block_size: int | None,
                 **kwargs) -> None:
    """`--ray`: the scan on Ray (edge/ray/scan.py, imported only here)."""
    from ..ray.scan import is_address, run

    if not is_address(address):  # `--ray photos`: a path, taken as the address's place
        paths, address = (address, *paths), "local"
    if not paths:
        raise click.UsageError("Missing argument 'PATHS...'.")
    if annotate_dir is not None:
        raise click.UsageError("--annotate is not available with --ray (the images are decoded on Ray's workers)")
    if kwargs["resume"] and kwargs["overwrite"]:
        raise click.UsageError("--resume keeps the results and --overwrite replaces them: choose one")
    code = run(paths, address=address, block_size=block_size or 1000, **kwargs)
    if code:
        sys.exit(code)
