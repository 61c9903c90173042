"""PNG charts for reports and runs (matplotlib, headless)."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def class_bars(counts: Mapping[str, Mapping[str, int]], short_sides: Mapping[str, list[int]],
               path: Path, title: str = "") -> Path:
    """Grouped bars of images per class for each split, plus a histogram of short sides."""
    plt = pyplot()
    splits = list(counts)
    names = sorted({c for s in splits for c in counts[s]}, key=lambda c: (c == "(none)", c))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / max(1, len(splits))
    for k, s in enumerate(splits):
        xs = [i + k * width for i in range(len(names))]
        ax.bar(xs, [counts[s].get(c, 0) for c in names], width, label=s)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=45, ha="right")
    ax.set_ylabel("images")
    ax.set_title(title or "images per class")
    ax.legend()
    for s in splits:
        if short_sides.get(s):
            ax2.hist(short_sides[s], bins=30, alpha=0.6, label=s)
    ax2.set_xlabel("short side (px)")
    ax2.set_title("image sizes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def training_curves(history_csv: Path, path: Path) -> Path:
    """Plot loss, AUC, binary accuracy and learning rate per epoch from a CSVLogger file."""
    plt = pyplot()
    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) + 1 for r in rows]

    def num(v: str) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):  # CSVLogger writes NA for missing values
            return float("nan")

    panels = [("loss", "loss"), ("auc", "AUC"), ("binary_accuracy", "binary accuracy"),
              ("learning_rate", "learning rate")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, (key, title) in zip(axes, panels, strict=True):
        plotted = []
        for prefix, style in (("", "-o"), ("val_", "--s")):
            k = prefix + key
            if rows and k in rows[0]:
                values = [num(r[k]) for r in rows]
                ax.plot(epochs, values, style, label=k, markersize=3)
                plotted += values
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if key == "learning_rate" and plotted and all(v > 0 for v in plotted):  # a rate of 0 has no log
            ax.set_yscale("log")
        if plotted:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
