"""Write models/README.md (the model card) from the files the pipeline produced.

Every figure comes from a JSON file written by a command (`make models`,
`make bench`); this script only formats them, so rerunning those commands and
then this one reproduces the card.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _p(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):.1f}"


def _eval_rows(report: dict[str, Any]) -> list[str]:
    rows = []
    for role, r in report.get("roles", {}).items():
        for t in ("on", "off"):
            m = r[f"tiling_{t}"]
            size = m.get("recall_by_size") or {}
            rows.append(f"| {role} | {t} | {_p(m['mAP'])} | {_p(m['top1'])} | {_p(m['exact_match'])} "
                        f"| {_p(m['prf']['micro']['f1'])} | {_p(size.get('small', {}).get('recall'))} "
                        f"| {_p(size.get('medium', {}).get('recall'))} | {_p(size.get('large', {}).get('recall'))} |")
    return rows


def card(runs: Path, models: Path, bench: Path | None) -> str:
    """The model card as Markdown."""
    std, hd = _load(runs / "std" / "metrics.json"), _load(runs / "hd" / "metrics.json")
    std_cfg, hd_cfg = _load(runs / "std" / "config.json"), _load(runs / "hd" / "config.json")
    stages = _load(runs / "stages.json")
    voc = _load(models / "eval" / "voc07_val" / "report.json")
    cifar = _load(models / "eval" / "cifar10_test" / "report.json")
    out = ["# sixview models: model card", "",
           "Produced end to end by `make models` (training/make_models.py) on this repository's CPU "
           "machine from `../shared/data`; every figure below comes from a file that command writes "
           "(`runs/*/metrics.json`, `models/eval/*/report.json`) or from `make bench`, and this card "
           "is regenerated with `python -m training.model_card`.", "",
           "## The models", "",
           "| file | role | what |", "| --- | --- | --- |"]
    for f in sorted(models.glob("*.onnx")):
        role = "hd" if f.name.startswith("hd") else "standard"
        prec = "FP16 (GPU)" if ".fp16." in f.name else "INT8 (CPU)" if ".int8." in f.name else "FP32 (CPU)"
        out.append(f"| `{f.name}` | {role} | {prec}, {f.stat().st_size / 1e6:.1f} MB |")
    if std_cfg:
        out += ["", f"- **Standard**: `{std_cfg.get('arch')}` from scratch (no ImageNet weights: they cannot be "
                f"downloaded here), input {std_cfg['input_size'][0]}x{std_cfg['input_size'][1]}, classes "
                f"{', '.join(std_cfg['classes'])}; trained on CIFAR-10 train ({std.get('n_train')} images, "
                f"{std.get('n_val')} held out for validation and threshold calibration), MixUp 0.2, AdamW, "
                f"{std.get('epochs_run')} epochs (best: {std.get('best_epoch')}), "
                f"{std.get('wall_time_s', 0) / 60:.0f} min wall, {std.get('images_per_s')} images/s."]
    if hd_cfg:
        out += [f"- **HD**: Standard fine-tuned on voc07_train ({hd.get('n_train')} photos; all layers, lr "
                f"{hd_cfg['adapt']['lr']}), epoch chosen by six-view mAP on voc07_val, "
                f"{hd.get('epochs_run')} epochs, {hd.get('wall_time_s', 0) / 60:.0f} min wall; VOC does not "
                f"label {', '.join(c for c in hd_cfg['classes'] if c not in hd_cfg['known_classes'])}: "
                "masked in the loss and in every metric."]
    out += ["- **Thresholds**: Standard calibrated (per-class max F1) on the CIFAR-10 training images its run "
            "held out; HD on voc07_val. Figures at thresholds on voc07_val are therefore optimistic for HD; "
            "mAP does not depend on thresholds.", ""]
    if stages:
        out += ["## Commands", "", "| stage | command | wall |", "| --- | --- | --- |"]
        out += [f"| {k} | `{v['command']}` | {v['wall_s'] / 60:.1f} min |" for k, v in stages.items()]
        out.append("")
    head = ["| engine | tiling | mAP | top-1 | exact match | micro F1 | small recall | medium | large |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for title, rep, name in (("CIFAR-10 test", cifar, "cifar10_test"),
                             ("voc07_val (real photos)", voc, "voc07_val")):
        if rep:
            out += [f"## {title} (percent)", "", f"`sixview eval models --data ...` -> `models/eval/{name}/`", "",
                    *head, *_eval_rows(rep), ""]
    if voc.get("roles", {}).keys() >= {"standard", "hd"}:
        s, h = voc["roles"]["standard"]["tiling_on"], voc["roles"]["hd"]["tiling_on"]
        out += ["### Per class on voc07_val (six views; percent)", "",
                "| class | AP Standard | AP HD | F1 Standard | F1 HD |", "| --- | --- | --- | --- | --- |"]
        out += [f"| {c} | {_p(s['ap'][c])} | {_p(h['ap'][c])} | {_p(s['prf'][c]['f1'])} "
                f"| {_p(h['prf'][c]['f1'])} |" for c in voc["classes"]]
        out.append("")
    if hd:
        b, a = hd.get("before", {}), hd.get("after", {})
        out += ["## Adaptation: before and after (from runs/hd/metrics.json; percent)", "",
                "| measure | Standard | HD |", "| --- | --- | --- |",
                f"| voc07_val mAP, six views (Keras) | {_p(b['photos']['tiling_on']['mAP'])} "
                f"| {_p(a['photos']['tiling_on']['mAP'])} |"]
        if "cifar10_test" in a:
            out.append(f"| CIFAR-10 test top-1 (Keras) | {_p(b['cifar10_test']['top1'])} "
                       f"| {_p(a['cifar10_test']['top1'])} |")
        out.append("")
    others = sorted(p for p in runs.glob("hd*") if (p / "metrics.json").is_file())
    if len(others) > 1:
        out += ["### Adaptation runs compared (selection on voc07_val; percent)", "",
                "| run | lr | epochs | val mAP six views | val mAP whole | CIFAR-10 top-1 |",
                "| --- | --- | --- | --- | --- | --- |"]
        for p in others:
            m, c = _load(p / "metrics.json"), _load(p / "config.json")
            after = m["after"]
            out.append(f"| `{p.name}` | {c['adapt']['lr']:g} | {m['epochs_run']} | {_p(m['val_map_after'])} "
                       f"| {_p(after['photos']['tiling_off']['mAP'])} | {_p(after['cifar10_test']['top1'])} |")
        out.append("")
    lat = _load(bench) if bench else {}
    if lat:
        cpu = lat.get("machine", {}).get("cpu", "?")
        out += ["## Latency on this CPU", "", f"From `{bench}` (`make bench`); machine: {cpu}. A batch of 6 is one "
                "six-view frame. The machine is shared and noisy: absolute times are indicative.", "",
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
def main(runs: Path, models: Path, bench: Path | None) -> None:
    """Regenerate models/README.md from the pipeline's outputs."""
    (models / "README.md").write_text(card(runs, models, bench))
    click.echo(f"wrote {models / 'README.md'}")


if __name__ == "__main__":
    main()
