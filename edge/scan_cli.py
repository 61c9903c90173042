"""`sixview scan`: classify images in files and folders."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import SETUP_ERRORS
from .options import engine_options, make_engine, setup_error
from .records import CsvSink, JsonlSink, done_paths
from .scan import collect, in_shard, parse_shard
from .scan import scan as run_scan


@click.command("scan")
@click.argument("paths", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSONL results file (default: stdout).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a flat CSV (path, labels, one score column per class).")
@click.option("--annotate", "annotate_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write copies with labels and the winning views drawn into this folder.")
@click.option("--resume", is_flag=True, help="Skip images that already have a record in --out; append.")
@click.option("--shard", default=None, metavar="I/N",
              help="Process only shard I of N (0-based; deterministic), e.g. for array jobs.")
@click.option("--batch", "batch_images", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per ONNX Runtime call (six views each; 8 scanned voc07_val 1.6x faster than 1).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Decoding threads (decoding overlaps inference).")
@engine_options
def scan(paths: tuple[str, ...], out: Path | None, csv_path: Path | None, annotate_dir: Path | None,
         resume: bool, shard: str | None, batch_images: int, workers: int, **engine_opts) -> None:
    """Classify images in PATHS (files, folders searched recursively, or globs).

    Writes one JSON record per image (labels, scores, winning views, timings,
    error). A bad file gets a record with its error and the scan goes on; the
    exit code is 1 if any image failed, 2 for a usage or model error.
    """
    if resume and out is None:
        raise click.UsageError("--resume needs --out FILE")
    try:
        files = collect(paths)
        if shard:
            part = parse_shard(shard)
            files = [f for f in files if in_shard(f, part)]
    except (FileNotFoundError, ValueError) as e:
        raise click.UsageError(str(e)) from None
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
        with JsonlSink(out, append=resume) as sink, (CsvSink(csv_path) if csv_path else _NullSink()) as table:
            def write(rec: dict) -> None:
                sink.write(rec)
                table.write(rec)

            summary = run_scan(files, engine, write, annotate_dir, batch_images, workers, list(paths))
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


class _NullSink:
    def __enter__(self) -> _NullSink:
        return self

    def write(self, rec: dict) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass
