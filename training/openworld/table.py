"""Before and after an open-world head, on photos that chose nothing: per source and per animal group.

Reads `sixview eval` reports (report.json) of the model before and after, on the same images: the
report parts of every photo set (`--report-of RUN`) and any other set (e.g. voc07_val). Writes the
goal's figures side by side as Markdown and JSON: per source mAP, the share of label-free photos
given a label, precision and recall at the model's decision; per group of photos (species) the share
given a label and what it was called.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edge.atomic import atomic_write
from training.eval.report import pct

ROLE = "hd"


def sources(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per set of a report (its folder name): images, mAP, label-free share labelled, precision, recall."""
    out = {}
    figs = report["roles"][ROLE]["tiling_on"]
    per_set = figs.get("per_set") or {report["sets"][0]["path"]: {"images": report["roles"][ROLE]["images"], **figs}}
    for key, fig in per_set.items():
        dec = fig["decision"]
        out[Path(key.split(":")[0]).name] = {
            "images": fig["images"], "mAP": fig["mAP"], "label_free": dec["label_free"],
            "label_free_labelled": dec["label_free_confident"] if dec["label_free"] else None,
            "precision": dec["confident"]["precision"], "recall": dec["confident"]["recall"]}
    return out


def groups(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per group of a report: photos, share labelled, top labels."""
    return {g["group"]: g for g in report.get("groups", {}).get(ROLE, [])}


def compare(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    """{"sources": {set: {"before", "after"}}, "groups": {group: {"before", "after"}}} of paired reports."""
    out: dict[str, Any] = {"sources": {}, "groups": {}}
    for b, a in zip(before, after, strict=True):
        sb, sa = sources(b), sources(a)
        out["sources"].update({k: {"before": sb[k], "after": sa[k]} for k in sa if k in sb})
        gb, ga = groups(b), groups(a)
        out["groups"].update({k: {"before": gb[k], "after": ga[k]} for k in ga if k in gb})
    return out


def _arrow(b: float | None, a: float | None) -> str:
    return f"{pct(b)} -> **{pct(a)}**"


def _group_rows(rows: list[tuple[str, dict[str, Any]]], min_photos: int) -> list[str]:
    lines = ["| group | photos | labelled (percent) | called (after) |", "| --- | --- | --- | --- |"]
    small = [f for _, f in rows if f["after"]["photos"] < min_photos]
    for g, fig in rows:
        if fig["after"]["photos"] >= min_photos:
            top = ", ".join(f"{t['label']} {t['photos']}" for t in fig["after"]["top_labels"]) or "-"
            lines.append(f"| {g} | {fig['after']['photos']} | "
                         f"{_arrow(fig['before']['labelled'], fig['after']['labelled'])} | {top} |")
    if small:
        n = sum(f["after"]["photos"] for f in small)
        share = {k: sum(f[k]["labelled"] * f[k]["photos"] for f in small) / n for k in ("before", "after")}
        lines.append(f"| {len(small)} groups of fewer than {min_photos} photos | {n} | "
                     f"{_arrow(share['before'], share['after'])} | |")
    return lines


def markdown(table: dict[str, Any], worst: int = 5, min_photos: int = 3) -> str:
    """The sources table, then the groups (species) that hold none of the classes and those that hold one,
    each most often labelled after first (groups of fewer than `min_photos` photos summed in one row)."""
    lines = ["| source (photos that chose nothing) | photos | mAP | label-free photos labelled | precision | recall |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, fig in table["sources"].items():
        b, a = fig["before"], fig["after"]
        lines.append(f"| {name} | {a['images']} | {_arrow(b['mAP'], a['mAP'])} | "
                     f"{_arrow(b['label_free_labelled'], a['label_free_labelled'])} (n={a['label_free']}) | "
                     f"{_arrow(b['precision'], a['precision'])} | {_arrow(b['recall'], a['recall'])} |")
    rows = sorted(table["groups"].items(), key=lambda kv: (-kv[1]["after"]["labelled"], -kv[1]["after"]["photos"]))
    free = [r for r in rows if r[1]["after"].get("label_free", 1.0) == 1.0]
    held = [r for r in rows if r[1]["after"].get("label_free", 1.0) < 1.0]
    if free:
        lines += ["", "Groups that are none of the classes (every label is a false alarm):", ""]
        lines += _group_rows(free, min_photos)
        names = ", ".join(g for g, f in free[:worst] if f["after"]["labelled"] > 0)
        lines += ["", f"Most often labelled after: {names or 'none'}."]
    if held:
        lines += ["", "Groups of the classes (the share labelled is their recall, any label):", ""]
        lines += _group_rows(sorted(held, key=lambda kv: kv[1]["after"]["labelled"]), min_photos)
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--pair", "pairs", nargs=2, multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              metavar="BEFORE AFTER", help="Two `sixview eval` output folders on the same images (repeatable).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Markdown file (JSON beside it).")
def main(pairs: tuple[tuple[Path, Path], ...], out: Path) -> None:
    """Write the before/after table of an open-world head from pairs of `sixview eval` reports."""
    load = lambda d: json.loads((d / "report.json").read_text())  # noqa: E731
    table = compare([load(b) for b, _ in pairs], [load(a) for _, a in pairs])
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as fh:
        fh.write(markdown(table))
    with atomic_write(out.with_suffix(".json")) as fh:
        fh.write(json.dumps(table, indent=1))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
