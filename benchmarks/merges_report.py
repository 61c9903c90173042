"""The Markdown report and verdict of `benchmarks.merges`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks._common import machine_md, md_table


def pct(v: float | None) -> str:
    """A fraction as a percentage with one decimal; "-" for a missing or NaN value."""
    return "-" if v is None or v != v else f"{100 * v:.1f}"


def _delta(ci: dict | None, key: str) -> str:
    if not ci:
        return ""
    lo, mid, hi = ci[key]
    return f"{100 * mid:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _params_md(name: str, params: dict[str, list[float]], classes: Sequence[str], own: Sequence[str]) -> str:
    """One merge's fitted parameters: one row when every class shares them, else a row per class
    with its own parameters and one for the others (the shared fallback)."""
    if not params:
        return ""
    if "w" in params:
        w, b = np.asarray(params["w"]), np.asarray(params["b"])
        keys = ["w_whole", "w_crop_max", "w_crop_mean", "bias"]
        table = np.vstack([w, b[None]])  # (4, K)
    else:
        keys = ["a_whole", "b_whole", "a_crop", "b_crop"]
        table = np.asarray([params[k] for k in keys])
    if np.allclose(table, table[:, :1]):
        rows = [["all classes", *table[:, 0].tolist()]]
    else:
        others = [i for i, c in enumerate(classes) if c not in own]
        rows = [[c, *table[:, i].tolist()] for i, c in enumerate(classes) if c in own]
        if others:
            rows.append(["others: " + ", ".join(classes[i] for i in others), *table[:, others[0]].tolist()])
    return f"\n`{name}`\n\n" + md_table(["classes", *keys], rows)


def markdown(result: dict[str, Any]) -> str:
    s, fit, test = result["settings"], result["fit"], result["test"]
    text = ["# View merges: max against view-aware merges\n\n", machine_md(result["machine"]),
            f"\nModel `{s['model']}` ({s['role']}, {', '.join(s['classes'])}). Command: `{s['command']}`.\n\n"
            f"- **Fit** (parameters and thresholds): {fit['name']}: {fit['images']} photos"
            f" ({fit['failed']} failed), {fit['label_free']} label-free; FIT positives per class: "
            + ", ".join(f"{c} {n}" for c, n in fit["positives"].items()) + ".\n"
            f"- **Test**: {test['name']}: {test['images']} photos ({test['failed']} failed),"
            f" {test['label_free']} label-free; classes scored: {', '.join(test['classes'])}.\n"
            f"- Thresholds: per class max F1 on the FIT set for the classes with >= {s['min_positives']}"
            f" FIT positives ({', '.join(fit['own_threshold']) or 'none'}); the others share one max-F1"
            " threshold pooled over those. Labels = classes at or above their threshold (no presence"
            " threshold, no fallback guess).\n"
            f"- Deltas: paired bootstrap over test photos ({s['bootstrap']} draws), median"
            " [95% interval], percentage points, against `max`.\n\n"]
    rows, split_rows = [], []
    for m in result["merges"]:
        t, ci = m["test"], result["bootstrap"].get(m["name"])
        rows.append([m["name"], m["fitted"], pct(t["mAP"]), _delta(ci, "mAP"), pct(t["precision"]),
                     pct(t["recall"]), pct(t["f1"]), _delta(ci, "f1"), pct(t["label_free_labelled"]),
                     _delta(ci, "label_free_labelled"), f"{m['cost_us']:.1f}"])
        own, pooled, tt = t["own_threshold"], t["pooled_threshold"], t["test_thresholds"]
        split_rows.append([m["name"], *(pct(g[k]) if g else "-" for g in (own, pooled) for k in ("precision", "recall",
                                                                                               "f1")),
                           pct(tt["precision"]), pct(tt["recall"]), pct(tt["f1"]), pct(tt["label_free_labelled"])])
    text.append(md_table(["merge", "params", "test mAP", "d mAP", "micro P", "micro R", "micro F1", "d F1",
                          "label-free labelled", "d label-free", "us/image"], rows))
    text.append("\nPercent. `us/image`: the merge alone, numpy on one (6, "
                f"{len(s['classes'])}) array (the runtime's list-based max is cheaper still).\n\n")
    own_names = [c for c in test["classes"] if c in fit["own_threshold"]]
    pooled_names = [c for c in test["classes"] if c not in fit["own_threshold"]]
    text.append("## Where the P/R differences come from\n\nMicro P/R/F1 at the FIT thresholds, on the test classes"
                f" with their own FIT threshold ({', '.join(own_names) or 'none'}) and on those with the pooled one"
                f" ({', '.join(pooled_names) or 'none'}); then at per-class max-F1 thresholds chosen on the TEST set"
                " itself (optimistic, never an operating point: it shows what each merge's ranking allows once"
                " the threshold transfer from FIT to TEST is taken out).\n\n")
    text.append(md_table(["merge", "own P", "own R", "own F1", "pooled P", "pooled R", "pooled F1",
                          "test-thr P", "test-thr R", "test-thr F1", "test-thr label-free labelled"], split_rows))
    text.append("\n")
    text.append("## Merges\n\n" + "".join(f"- `{m['name']}`: {m['about']}\n" for m in result["merges"]))
    text.append("\n## Per-class AP on the test set (percent)\n\n")
    names = test["classes"]
    text.append(md_table(["merge", *names], [[m["name"], *(pct(m["test"]["ap"][c]) for c in names)]
                                              for m in result["merges"]]))
    text.append("\n## Fitted parameters\n\nPlatt: sigmoid(a * z + b) per view kind; learned: sigmoid(w_whole *"
                " z_whole + w_crop_max * max z_crop + w_crop_mean * mean z_crop + bias); z = logit of a view's"
                " score. Classes without enough FIT data use the shared (fallback) row.\n")
    own = fit["own_params"]
    for m in result["merges"]:
        text.append(_params_md(m["name"], m["params"], s["classes"], own))
    text.append("\n## Thresholds (chosen on the FIT set)\n\n")
    text.append(md_table(["merge", *s["classes"]], [[m["name"], *m["thresholds"]] for m in result["merges"]]))
    text.append(f"\n{result['verdict']}\n")
    return "".join(text)


def verdict(merges: list[dict], boot: dict) -> str:
    """One paragraph: the best test mAP and F1 against max, with their intervals."""
    base = next(m for m in merges if m["name"] == "max")
    by_map = max(merges, key=lambda m: m["test"]["mAP"])
    by_f1 = max(merges, key=lambda m: m["test"]["f1"])

    def sig(name: str, key: str) -> str:
        ci = boot.get(name)
        if not ci:
            return ""
        lo, _, hi = ci[key]
        return " (interval excludes 0)" if lo > 0 or hi < 0 else " (interval includes 0)"

    def best(m: dict, key: str, what: str) -> str:
        if m["test"][key] <= base["test"][key]:
            return f"{what}: no merge beats max ({pct(base['test'][key])})."
        return (f"{what}: `{m['name']}` {pct(m['test'][key])} vs max {pct(base['test'][key])}"
                f"{sig(m['name'], key)}.")

    parts = [best(by_map, "mAP", "Best test mAP"), best(by_f1, "f1", "Best micro F1 at FIT thresholds")]
    return "**Verdict**: " + " ".join(parts)
