"""The evaluation report: Markdown, JSON and a precision-recall plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal; "-" for a missing or NaN value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.1f}"


def _examples(pairs: list) -> str:
    return ", ".join(f"`{i}` ({why})" for i, why in pairs)


def inputs_lines(inputs: dict[str, Any] | None) -> list[str]:
    """Report lines on what was listed but not scored: missing files, failed images, ignored labels."""
    if not inputs:
        return []
    lines = [f"- listed images: {inputs['listed']}; missing or unreadable (left out): {inputs['missing']}; "
             f"failed when read or decoded (left out of the metrics): {inputs['failed']}"]
    if inputs["missing"]:
        lines.append(f"  - missing, e.g. {_examples(inputs['missing_examples'])}")
    if inputs["failed"]:
        lines.append(f"  - failed, e.g. {_examples(inputs['failed_examples'])}")
    if inputs["ignored_labels"]:
        lines.append("- label names ignored (not classes of this set): " + ", ".join(
            f"{c} ({n} image{'' if n == 1 else 's'})" for c, n in inputs["ignored_labels"].items()))
    if inputs.get("no_positives"):
        lines.append("- classes no scored image is labelled with (AP undefined; precision, recall and F1 are 0): "
                     + ", ".join(inputs["no_positives"]))
    if inputs.get("unscored_classes"):
        lines.append("- classes of this set the models do not have (not scored): "
                     + ", ".join(inputs["unscored_classes"]))
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: summary, Standard-vs-HD table, per-class AP, object sizes."""
    roles = report["roles"]
    cal = report.get("calibrated_on")
    lines = [f"# sixview evaluation: {report['set']}", "",
             f"- images: {report['images']}; classes scored: {', '.join(report['classes'])}"
             + (f"; masked (not labelled by this set): {', '.join(report['masked'])}" if report["masked"] else ""),
             *inputs_lines(report.get("inputs")),
             f"- models: {report['models']}; command: `{report['command']}`",
             "- thresholds: each model's own" + (f" (calibrated on {cal})" if cal else ""),
             "", "## Summary (percent)", "",
             "| engine | tiling | mAP | exact match | micro F1 | macro F1 | top-1 | small recall | medium | large |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for role, r in roles.items():
        for t in ("on", "off"):
            m = r[f"tiling_{t}"]
            size = m["recall_by_size"] or {}
            lines.append(f"| {role} | {t} | {pct(m['mAP'])} | {pct(m['exact_match'])} | {pct(m['prf']['micro']['f1'])} "
                         f"| {pct(m['prf']['macro']['f1'])} | {pct(m['top1'])} | "
                         + " | ".join(f"{pct(size.get(s, {}).get('recall'))} (n={size.get(s, {}).get('objects', 0)})"
                                      if size else "-" for s in ("small", "medium", "large")) + " |")
    if {"standard", "hd"} <= set(roles):
        s, h = roles["standard"]["tiling_on"], roles["hd"]["tiling_on"]
        lines += ["", "## Standard vs HD (six views, model thresholds; percent)", "",
                  "| | Standard | HD | difference |", "| --- | --- | --- | --- |",
                  f"| overall accuracy (exact match) | {pct(s['exact_match'])} | {pct(h['exact_match'])} "
                  f"| {100 * (h['exact_match'] - s['exact_match']):+.1f} |",
                  f"| mAP | {pct(s['mAP'])} | {pct(h['mAP'])} | {100 * (h['mAP'] - s['mAP']):+.1f} |"]
        for c in report["classes"]:
            fs, fh = s["prf"][c]["f1"], h["prf"][c]["f1"]
            lines.append(f"| F1 {c} | {pct(fs)} | {pct(fh)} | {100 * (fh - fs):+.1f} |")
    lines += ["", "## Per-class AP (percent)", "",
              "| class | " + " | ".join(f"{r} tiling {t}" for r in roles for t in ("on", "off")) + " |",
              "| --- |" + " --- |" * (2 * len(roles))]
    for c in report["classes"]:
        lines.append(f"| {c} | " + " | ".join(pct(roles[r][f"tiling_{t}"]["ap"][c]) for r in roles
                                             for t in ("on", "off")) + " |")
    lines += ["", "## Precision / recall / F1 at the model thresholds (six views; percent)", "",
              "| class | " + " | ".join(f"{r} P | {r} R | {r} F1" for r in roles) + " |",
              "| --- |" + " --- |" * (3 * len(roles))]
    for c in [*report["classes"], "micro", "macro"]:
        lines.append(f"| {c} | " + " | ".join(
            f"{pct(roles[r]['tiling_on']['prf'][c]['precision'])} | {pct(roles[r]['tiling_on']['prf'][c]['recall'])} "
            f"| {pct(roles[r]['tiling_on']['prf'][c]['f1'])}" for r in roles) + " |")
    lines += ["", "Object sizes: box side relative to the image side, sqrt(box area / image area): "
              "small < 0.25 <= medium < 0.5 <= large. An object counts as found when its class is among "
              "its image's labels.", ""]
    return "\n".join(lines)


def pr_plot(curves: dict[str, tuple[np.ndarray, np.ndarray, list[str]]], path: Path) -> None:
    """One panel per engine: per-class precision-recall curves (six views)."""
    from sklearn.metrics import precision_recall_curve

    from training.fit.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 5), squeeze=False)
    for ax, (role, (y, s, names)) in zip(axes[0], curves.items(), strict=True):
        for k, c in enumerate(names):
            if y[:, k].any():
                p, r, _ = precision_recall_curve(y[:, k], s[:, k])
                ax.plot(r, p, label=c)
        ax.set(title=f"{role} (six views)", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], curves: dict, out_dir: Path) -> list[Path]:
    """Write report.md, report.json and pr.png into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.md", out_dir / "report.json", out_dir / "pr.png"]
    paths[0].write_text(markdown(report), encoding="utf-8")
    paths[1].write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    pr_plot(curves, paths[2])
    return paths
