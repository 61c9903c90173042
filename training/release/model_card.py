"""Write models/README.md (the model card) from the files the pipeline produced.

Every figure comes from a JSON file written by a command (`make models`,
`make bench`); this script only formats them, so rerunning those commands and
then this one reproduces the card.
"""

from __future__ import annotations

from pathlib import Path

import click

from convert.macs import frame_macs
from edge.atomic import atomic_write
from training.eval.report import pct
from training.release.recipes import compare_rows, load_json, onnx_meta, portable, recipe_section

CARD_HEADING = "# sixview models: model card"  # above it, models/README.md holds what is written by hand


def _onnx_calibration(path: Path) -> str | None:
    """What calibrated a shipped model's thresholds, from its own metadata."""
    meta = onnx_meta(path)
    text = meta.provenance.get("calibration", {}).get("set") if meta else None
    return portable(text) if text else None


def _trust_section(evals: Path) -> list[str]:
    """Before/after at the models' decision on voc07_val: the previous shipped HD model (its report kept in
    `models/eval/previous/`), every recipe's, and the shipped one."""
    rows = []
    recipes = sorted(p.parent.parent.name for p in evals.glob("*/voc07_val/report.json") if p.parent.parent.name
                     != "previous")
    for name, rep in (("previous models (voc07_val chose their epoch and thresholds)",
                       load_json(evals / "previous" / "voc07_val" / "report.json")),
                      *((f"`{r}` (voc07_val chose nothing)", load_json(evals / r / "voc07_val" / "report.json"))
                        for r in recipes),
                      ("**these models** (voc07_val chose nothing)", load_json(evals / "voc07_val" / "report.json"))):
        for t in ("on", "off"):
            d = rep.get("roles", {}).get("hd", {}).get(f"tiling_{t}", {}).get("decision")
            if d:
                c, g = d["confident"], d["confident_or_guess"]
                rows.append(f"| {name} | {t} | {pct(c['precision'])} | {pct(c['recall'])} "
                            f"| {pct(d['label_free_confident'])} | {pct(g['precision'])} | {pct(g['recall'])} "
                            f"| {pct(d['label_free_confident_or_guess'])} | {d['presence_auroc']:.3f} |")
    if not rows:
        return []
    return ["## Trust on voc07_val: labels you can filter by (HD; percent)", "",
            "At each model's own decision: `labels` are the confident classes; '+ guess' adds the reference "
            "system's fallback (top class above 0.20 when nothing passes), which records keep apart in `guess`. "
            "Label-free: the photos with none of VOC's seven classes. From `sixview eval ... --data "
            "../shared/data/voc07_val` (`models/eval/voc07_val/`, and `models/eval/previous/voc07_val/` for the "
            "models shipped before).", "",
            "| models | tiling | precision | recall | label-free photos labelled | + guess: precision | recall "
            "| label-free labelled | presence AUROC |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows, ""]


def _open_world_section(evals: Path) -> list[str]:
    """The open-world head's before/after table (`training.openworld.table`), when the shipped models have one."""
    table = evals / "open_world.md"
    if not table.is_file():
        return []
    return ["## Open world: before and after the HD model's open-world head (percent)", "",
            "Photos that chose nothing: the report part of every photo set (`sixview openworld`'s splits.json) "
            "and voc07_val; before: the models the head was fitted on, after: the shipped ones, each at its own "
            "calibrated decision. Written by `python -m training.openworld.table` (`make models`).", "",
            table.read_text().strip(), ""]


def _frame_gmac(path: Path) -> str:
    """Multiply-adds of one six-view frame through an ONNX file (an INT8 IR: its ONNX file's), in GMAC."""
    return f"{frame_macs(path) / 1e9:.3g}" if path.is_file() else ""


def _same_file(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def card(runs: Path, models: Path, bench: Path | None, backbones: Path | None = None) -> str:
    """The model card as Markdown."""
    recipes = sorted(p.name for p in runs.iterdir() if (p / "stages.json").is_file()) if runs.is_dir() else []
    shipped = next((r for r in recipes if all(_same_file(models / f, runs / r / "calibrated" / f)
                                              for f in ("standard.onnx", "hd.onnx"))), None)  # both: HD may be shared
    out = [CARD_HEADING, "",
           "Produced end to end by `make models` (training/release/make_models.py) on this repository's CPU "
           "machine from `../shared/data`: for each backbone it trains Standard, adapts HD, converts, calibrates "
           "and evaluates, then ships one backbone's models. Every figure below comes from a file a command "
           "writes (`runs/<backbone>/*/metrics.json`, `models/eval/<backbone>/*/report.json`, `make bench`, "
           "`benchmarks/backbones.py`); this card is regenerated with `python -m training.release.model_card`.", "",
           "## The shipped models", "",
           "| file | role | what | GMAC/frame |", "| --- | --- | --- | --- |"]
    for f in sorted(models.glob("*.onnx")):
        role = "hd" if f.name.startswith("hd") else "standard"
        prec = "FP16 (GPU)" if ".fp16." in f.name else "INT8 (CPU)" if ".int8." in f.name else "FP32 (CPU)"
        out.append(f"| `{f.name}` | {role} | {prec}, {f.stat().st_size / 1e6:.1f} MB | {_frame_gmac(f)} |")
    for f in sorted(models.glob("*.int8-ov.xml")):  # OpenVINO IRs quantized from the ONNX file beside them
        role = "hd" if f.name.startswith("hd") else "standard"
        size = (f.stat().st_size + f.with_suffix(".bin").stat().st_size) / 1e6 if f.with_suffix(".bin").is_file() else 0
        out.append(f"| `{f.stem}.xml/.bin` | {role} | INT8 OpenVINO IR of `{role}.onnx` (NNCF, `python -m "
                   f"convert.int8_ov`; gated in `{role}.gates.json`), {size:.1f} MB "
                   f"| {_frame_gmac(models / f'{role}.onnx')} |")
    if shipped:
        out += ["", f"Backbone: **`{shipped}`** (`runs/{shipped}/calibrated/`); its evaluations are also in "
                "`models/eval/voc07_val` and `models/eval/cifar10_test`."]
    cal = _onnx_calibration(models / "hd.onnx")
    out += ["", "- **GMAC/frame**: multiply-adds of one six-view frame (`convert.macs`), at any precision."]
    out += ["- **Thresholds**: Standard calibrated (per-class max F1) on the CIFAR-10 training images its run "
            f"held out; HD on {cal or 'voc07_val (figures at thresholds on voc07_val are then optimistic)'}.", ""]
    out += _trust_section(models / "eval") + _open_world_section(models / "eval")
    bb = load_json(backbones) if backbones else {}
    lat = {r["name"]: r.get("latency_ms", {}) for r in bb.get("recipes", [])}
    if recipes:
        out += ["## Backbones side by side (percent; ms)", "",
                "CIFAR-10 top-1: Standard, whole image. mAP: six views / whole image on voc07_val. Small-object "
                "recall: HD, six views / whole image. Forgetting: CIFAR-10 test top-1 (Keras) before -> after "
                "adaptation. Frame: HD, one six-view batch, p50 FP32 / INT8"
                + (f", from `{backbones}` (`benchmarks/backbones.py`, this 2-core CPU, interleaved in one run)."
                   if bb else "."), "",
                "| recipe | input (Standard / HD) | weights | CIFAR-10 top-1 | Standard mAP | HD mAP | HD small recall "
                "| forgetting | frame ms |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        out += [compare_rows(r, runs / r, models / "eval" / r, lat) for r in recipes]
        out.append("")
        for r in recipes:
            out += recipe_section(r, runs / r, models / "eval" / r)
    lat = load_json(bench) if bench else {}
    if lat:
        cpu = lat.get("machine", {}).get("cpu", "?")
        out += ["## Latency of the shipped files on this CPU", "", f"From `{bench}` (`make bench`); machine: {cpu}. "
                "A batch of 6 is one six-view frame. The machine is shared and noisy: absolute times are "
                "indicative.", "",
                "| file | provider | threads | batch | mean ms | p50 | p95 | ms per frame |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in lat.get("results", []):
            s = r["stats_ms"]
            out.append(f"| {r['file']} | {r['provider']} | {r['threads']} | {r['batch']} | {s['mean']:.2f} "
                       f"| {s['p50']:.2f} | {s['p95']:.2f} | {r['ms_per_frame']:.2f} |")
        out.append("")
    return "\n".join(out)


@click.command()
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"))
@click.option("--models", type=click.Path(file_okay=False, path_type=Path), default=Path("models"))
@click.option("--bench", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A latency.json from benchmarks/latency.py.")
@click.option("--backbones", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A backbones.json from benchmarks/backbones.py.")
def main(runs: Path, models: Path, bench: Path | None, backbones: Path | None) -> None:
    """Regenerate the model card in models/README.md from the pipeline's outputs (what the file holds above
    the card's heading is kept)."""
    readme = models / "README.md"
    text = readme.read_text() if readme.is_file() else ""
    keep = text[:text.index(CARD_HEADING)] if CARD_HEADING in text else ""
    with atomic_write(readme) as fh:
        fh.write(keep + card(runs, models, bench, backbones))
    click.echo(f"wrote {models / 'README.md'}")


if __name__ == "__main__":
    main()
