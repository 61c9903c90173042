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


def merge_text(merge: dict[str, Any] | None) -> str:
    """A model's view merge (`ModelMeta.merge`) in words."""
    if not merge or merge.get("kind", "max") == "max":
        return "max (per class the max over the views)"
    w, bias = merge["w"], list(merge["bias"].values())
    return (f"{merge['kind']} (sigmoid of {w[0]:.3g} z_whole {w[1]:+.3g} max z_crop {w[2]:+.3g} mean z_crop"
            f" + a bias per class, {min(bias):.3g}..{max(bias):.3g}"
            + (f"; fitted on {merge['fitted_on']}" if merge.get("fitted_on") else "") + ")")


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


def _trust_cells(d: dict[str, Any]) -> str:
    c, g = d["confident"], d["confident_or_guess"]
    auroc = d["presence_auroc"]
    return (f"{pct(c['precision'])} | {pct(c['recall'])} | {pct(g['precision'])} | {pct(g['recall'])} "
            f"| {pct(d['label_free_confident'])} | {pct(d['label_free_confident_or_guess'])} (n={d['label_free']}) "
            f"| {'-' if auroc is None or math.isnan(auroc) else f'{auroc:.3f}'}")


TRUST_HEAD = ("confident P | confident R | +guess P | +guess R | label-free: labelled | label-free: labelled "
              "or guessed | presence AUROC")


def trust_lines(report: dict[str, Any]) -> list[str]:
    """The metrics of trust per engine and tiling, and per set when there are several."""
    roles = report["roles"]
    lines = ["", "## Trust at the model's decision (percent)", "",
             "Labels are the confident classes (score >= threshold: the record's `labels`); \"+guess\" adds the "
             "guess (the top class when none is confident, above the fallback score: the reference rule). "
             "Label-free photos: none of their set's classes is present; the columns give the share that got a "
             "confident label, or a label or guess. Presence AUROC: the runtime's presence, P(any of the model's "
             "classes), ranking labelled photos above "
             "label-free ones (- when either group is empty). Classes unknown to a photo's set are masked.", "",
             f"| engine | tiling | presence threshold | mAP | {TRUST_HEAD} |", "| --- " * 11 + "|"]
    for role, r in roles.items():
        for t in ("on", "off"):
            m = r[f"tiling_{t}"]
            lines.append(f"| {role} | {t} | {r.get('presence_threshold', 0.0):.4g} | {pct(m['mAP'])} "
                         f"| {_trust_cells(m['decision'])} |")
    if table := per_set_table(report):
        lines += ["", "### Per set (six views; percent)", "", *table]
    return lines


def per_set_table(report: dict[str, Any]) -> list[str]:
    """Per set and engine (six views): images, mAP, exact match and the trust columns; [] with one set."""
    roles = report["roles"]
    if not any("per_set" in r["tiling_on"] for r in roles.values()):
        return []
    lines = [f"| set | engine | images | mAP | exact match | {TRUST_HEAD} | masked |", "| --- " * 13 + "|"]
    for role, r in roles.items():
        for name, m in r["tiling_on"].get("per_set", {}).items():
            lines.append(f"| {name} | {role} | {m['images']} | {pct(m['mAP'])} | {pct(m['exact_match'])} "
                         f"| {_trust_cells(m['decision'])} | {', '.join(m['masked']) or '-'} |")
    return lines


def group_lines(report: dict[str, Any]) -> list[str]:
    """The report's group section (Markdown lines); [] when no set names groups."""
    groups = report.get("groups")
    if not groups:
        return []
    lines = ["", "## Groups: what each model calls them (six views; percent)", "",
             "Per group of photos (the set's groups.csv or species.csv): the share given a label (the record's "
             "`labels`), or a label or guess, and the labels given most, each with the share of the group's "
             "photos; sorted by the share labelled.", "",
             "| engine | group | photos | labelled | labelled or guessed | top labels |",
             "| --- | --- | --- | --- | --- | --- |"]
    for role, table in groups.items():
        for r in table:
            top = ", ".join(f"{t['label']} {pct(t['share'])}" for t in r["top_labels"]) or "-"
            lines.append(f"| {role} | {r['group']} | {r['photos']} | {pct(r['labelled'])} "
                         f"| {pct(r['labelled_or_guessed'])} | {top} |")
    return lines


def calibration_lines(report: dict[str, Any]) -> list[str]:
    """What --calibrate chose, and what it did to precision, recall and the label-free share."""
    cal = report.get("calibration")
    if not cal:
        return []
    lines = ["", "## Calibration (on the images above: these figures are not a test)", ""]
    for role, c in cal.items():
        sets = "; ".join(f"{p['path']} ({p['split']}{', held out' if p['heldout'] else ''}: {p['images']} images)"
                         for p in c["sets"])
        lines += [f"- {role}: chosen on {c['images']} images of {sets}. Rule: {c['rule']}.",
                  "  - thresholds: " + ", ".join(f"{k} {v:.4g}" for k, v in c["thresholds"].items())
                  + f"; presence threshold {c['presence_threshold']:.6g}",
                  "  - merge (" + ("fitted here first, then the thresholds on its scores" if c.get("merge_fitted")
                                   else "the model's own") + "): " + merge_text(c.get("merge"))
                  + (f"; own bias: {', '.join(c['merge_own_bias']) or 'none'} (the others: the pooled bias)"
                     if c.get("merge_fitted") else "")
                  + (f"; no calibration photo is labelled with {', '.join(c['merge_kept_thresholds'])}: they keep the"
                     " threshold chosen for the previous merge" if c.get("merge_kept_thresholds") else "")]
    lines += ["", f"| engine | decision | {TRUST_HEAD} |", "| --- " * 9 + "|"]
    for role, c in cal.items():
        for key, what in (("before", "model's merge and thresholds"),
                          ("class_thresholds", "calibrated class thresholds"), ("after", "+ presence threshold")):
            lines.append(f"| {role} | {what} | {_trust_cells(c[key])} |")
    return lines


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The summary table (percent) and the trust lines, from the report's figures (what
    `sixview eval` prints, and the report's summary section)."""
    lines = ["| engine | tiling | mAP | exact match | micro F1 | macro F1 | top-1 | small recall | medium | large |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for role, r in report["roles"].items():
        for t in ("on", "off"):
            m = r[f"tiling_{t}"]
            size = m["recall_by_size"] or {}
            lines.append(f"| {role} | {t} | {pct(m['mAP'])} | {pct(m['exact_match'])} | {pct(m['prf']['micro']['f1'])} "
                         f"| {pct(m['prf']['macro']['f1'])} | {pct(m['top1'])} | "
                         + " | ".join(f"{pct(size.get(s, {}).get('recall'))} (n={size.get(s, {}).get('objects', 0)})"
                                      if size else "-" for s in ("small", "medium", "large")) + " |")
    return lines + trust_lines(report)


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: summary, trust, Standard-vs-HD table, per-class AP, object sizes,
    calibration."""
    roles = report["roles"]
    cal = report.get("calibrated_on")
    overlap = {r: v["calibration_overlap"] for r, v in roles.items() if v.get("calibration_overlap")}
    lines = [f"# sixview evaluation: {report['set']}", "",
             f"- images: {report['images']}; classes scored: {', '.join(report['classes'])}"
             + (f"; masked (not labelled by the set): {', '.join(report['masked'])}" if report["masked"] else ""),
             *inputs_lines(report.get("inputs")),
             f"- models: {report['models']}; command: `{report['command']}`",
             "- thresholds: each model's own" + (f" (calibrated on {cal})" if cal else ""),
             *[f"- {r} merge: {merge_text(v.get('merge'))}" for r, v in roles.items()],
             *[f"- warning: {n} of the {roles[r]['images']} scored images chose the {r} model's thresholds: "
               "its figures here are optimistic" for r, n in overlap.items()],
             "", "## Summary (percent)", "", *summary_lines(report)]
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
    lines += ["", "## Precision / recall / F1 of the confident labels (six views; percent)", "",
              "| class | " + " | ".join(f"{r} P | {r} R | {r} F1" for r in roles) + " |",
              "| --- |" + " --- |" * (3 * len(roles))]
    for c in [*report["classes"], "micro", "macro"]:
        lines.append(f"| {c} | " + " | ".join(
            f"{pct(roles[r]['tiling_on']['prf'][c]['precision'])} | {pct(roles[r]['tiling_on']['prf'][c]['recall'])} "
            f"| {pct(roles[r]['tiling_on']['prf'][c]['f1'])}" for r in roles) + " |")
    lines += ["", "Object sizes: box side relative to the image side, sqrt(box area / image area): "
              "small < 0.25 <= medium < 0.5 <= large. An object counts as found when its class is among "
              "its image's labels.", *group_lines(report), *calibration_lines(report), ""]
    return "\n".join(lines)


def pr_plot(curves: dict[str, tuple], path: Path) -> None:
    """One panel per engine: per-class precision-recall curves (six views); `curves` maps a role to
    (y, s, names) or (y, s, names, known (N, K) mask): a class's curve uses the rows that know it."""
    from sklearn.metrics import precision_recall_curve

    from training.fit.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 5), squeeze=False)
    for ax, (role, (y, s, names, *known)) in zip(axes[0], curves.items(), strict=True):
        mask = known[0] if known else np.ones(y.shape, bool)
        for k, c in enumerate(names):
            yk, sk = y[mask[:, k], k], s[mask[:, k], k]
            if yk.any():
                p, r, _ = precision_recall_curve(yk, sk)
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
