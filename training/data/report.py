"""EDA and cleaning report of a data set: Markdown plus a bar-chart PNG.

Counts images per class and split, image sizes, files dropped while caching
(empty, undecodable, missing) and exact duplicates (same bytes, or the same
pixels for pickled sets), within and across splits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.data.cache import CachedSplit, load_split
from training.data.datasets import DataSource

MAX_LISTED = 50


@dataclass
class DataReport:
    """What `build_report` found; `markdown()` renders it."""

    source: str
    kind: str
    classes: list[str]
    totals: dict[str, int] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    sizes: dict[str, Counter] = field(default_factory=dict)
    dropped: dict[str, list[dict]] = field(default_factory=dict)
    duplicates: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        """Short numbers for logs and JSON."""
        return {"images": self.totals, "dropped": sum(len(v) for v in self.dropped.values()),
                "duplicate_groups": len(self.duplicates),
                "cross_split_duplicates": sum(d["cross_split"] for d in self.duplicates)}

    def markdown(self, png_name: str | None = None) -> str:
        """The report as Markdown."""
        splits = list(self.totals)
        out = [f"# Data report: `{self.source}`", "",
               f"Reader: {self.kind}. Classes ({len(self.classes)}): {', '.join(self.classes)}.", ""]
        if png_name:
            out += [f"![images per class]({png_name})", ""]
        out += ["## Images per class", "",
                "| class | " + " | ".join(splits) + " |", "| --- |" + " ---: |" * len(splits)]
        for c in [*self.classes, "(none)"]:
            out.append(f"| {c} | " + " | ".join(str(self.counts[s].get(c, 0)) for s in splits) + " |")
        out.append("| **total images** | " + " | ".join(str(self.totals[s]) for s in splits) + " |")
        out += ["", "(An image with several labels counts once per label; `(none)`: no label.)",
                "", "## Image sizes (H x W)", ""]
        for s in splits:
            common = ", ".join(f"{h}x{w}: {n}" for (h, w), n in self.sizes[s].most_common(8))
            if self.sizes[s]:
                shorts = [min(hw) for hw in self.sizes[s].elements()]
                out.append(f"- {s}: {len(self.sizes[s])} distinct sizes; short side "
                           f"min {min(shorts)}, median {int(np.median(shorts))}, max {max(shorts)}; "
                           f"most common {common}")
            else:
                out.append(f"- {s}: no images")
        out += ["", "## Dropped files (empty, undecodable, missing)", ""]
        n_drop = sum(len(v) for v in self.dropped.values())
        if not n_drop:
            out.append("None.")
        for s, items in self.dropped.items():
            for d in items[:MAX_LISTED]:
                out.append(f"- {s}: `{d['id']}`: {d['reason']}")
            if len(items) > MAX_LISTED:
                out.append(f"- {s}: ... and {len(items) - MAX_LISTED} more")
        out += ["", "## Exact duplicates (by content hash)", ""]
        cross = sum(d["cross_split"] for d in self.duplicates)
        conflict = sum(d["conflicting_labels"] for d in self.duplicates)
        out.append(f"{len(self.duplicates)} groups of identical images; {cross} span splits "
                   f"(e.g. train/test leakage); {conflict} carry different labels. "
                   "Duplicates are reported, not removed.")
        out.append("")
        for d in self.duplicates[:MAX_LISTED]:
            items = "; ".join(f"{s}:`{i}` ({'|'.join(lab) or '-'})" for s, i, lab in d["items"])
            out.append(f"- {items}")
        if len(self.duplicates) > MAX_LISTED:
            out.append(f"- ... and {len(self.duplicates) - MAX_LISTED} more groups")
        return "\n".join(out) + "\n"


def _labels_of(split: CachedSplit, i: int) -> tuple[str, ...]:
    return tuple(split.classes[k] for k in np.flatnonzero(split.labels[i]))


def build_report(source: DataSource, cache_root: Path | None = None,
                 splits: Sequence[str] | None = None, progress: bool = True) -> DataReport:
    """Build the report from the cache (decoding the source first if needed)."""
    rep = DataReport(str(source.path), source.kind, list(source.classes))
    seen: dict[bytes, list[tuple[str, str, tuple[str, ...]]]] = {}
    for s in splits or source.splits:
        sp = load_split(source, s, cache_root, progress=progress)
        rep.totals[s] = len(sp)
        per_class = sp.labels.sum(axis=0)
        rep.counts[s] = {c: int(n) for c, n in zip(sp.classes, per_class, strict=True)}
        rep.counts[s]["(none)"] = int((sp.labels.sum(axis=1) == 0).sum())
        rep.sizes[s] = Counter((int(h), int(w)) for _, h, w in sp.index)
        rep.dropped[s] = list(sp.dropped)
        for i, h in enumerate(sp.hashes):
            seen.setdefault(h.tobytes(), []).append((s, sp.ids[i], _labels_of(sp, i)))
    for items in seen.values():
        if len(items) > 1:
            rep.duplicates.append({
                "items": items,
                "cross_split": len({s for s, _, _ in items}) > 1,
                "conflicting_labels": len({lab for _, _, lab in items}) > 1})
    rep.duplicates.sort(key=lambda d: (not d["cross_split"], not d["conflicting_labels"]))
    return rep


def write_report(rep: DataReport, out_dir: Path, stem: str = "data_report") -> tuple[Path, Path]:
    """Write `<stem>.md` and `<stem>.png` into `out_dir`; return both paths."""
    from training.fit.plots import class_bars

    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{stem}.png"
    shorts = {s: [min(hw) for hw in c.elements()] for s, c in rep.sizes.items()}
    class_bars(rep.counts, shorts, png, title=f"images per class: {Path(rep.source).name}")
    md = out_dir / f"{stem}.md"
    md.write_text(rep.markdown(png.name))
    return md, png
