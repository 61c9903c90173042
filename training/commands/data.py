"""`sixview data`: data set tools (loaded lazily by edge.cli)."""

from __future__ import annotations

from pathlib import Path

import click

from training.errors import UserError


@click.group("data")
def data() -> None:
    """Data set tools."""


@data.command("report")
@click.argument("dataset", type=click.Path(path_type=str))
@click.option("--out", type=click.Path(path_type=str), default=".", show_default=True,
              help="Folder for data_report.md and data_report.png.")
@click.option("--cache-dir", type=click.Path(path_type=str), default=None,
              help="Decoded-image cache (default $SIXVIEW_CACHE or ~/.cache/sixview).")
def report(dataset: str, out: str, cache_dir: str | None) -> None:
    """Images per class, sizes, dropped (empty/undecodable) files, exact duplicates."""
    from training.data.datasets import open_source
    from training.data.report import build_report, write_report

    try:
        cache = Path(cache_dir).expanduser() if cache_dir else None
        rep = build_report(open_source(dataset, cache), cache)
        md, png = write_report(rep, Path(out))
    except UserError as e:
        raise click.ClickException(str(e)) from None
    s = rep.summary()
    click.echo(f"{md}\n{png}\nimages: {s['images']}; dropped: {s['dropped']}; "
               f"duplicate groups: {s['duplicate_groups']} "
               f"({s['cross_split_duplicates']} across splits)")
