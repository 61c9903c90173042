"""Data readers and label alignment on the real shared data (skipped when ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.datasets import CIFAR10_CLASSES, CsvSource, open_source
from training.data.labels import align_labels, select

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "voc07_val" / "labels.csv").exists(),
                                reason=f"shared data not found at {SHARED}")


def test_voc_labels_align_onto_cifar_classes() -> None:
    src = open_source(SHARED / "voc07_val")
    assert isinstance(src, CsvSource) and len(src.rows) == 669
    assert src.classes == sorted(["airplane", "automobile", "bird", "cat", "dog", "horse", "ship"])
    import numpy as np

    labels = np.zeros((len(src.rows), len(src.classes)), np.uint8)
    for i, (_, names) in enumerate(src.rows):
        labels[i, [src.classes.index(n) for n in names]] = 1
    targets, known = align_labels(labels, CIFAR10_CLASSES, src.classes)
    assert [c for c, k in zip(CIFAR10_CLASSES, known, strict=True) if not k] == ["deer", "frog", "truck"]
    assert int((targets.sum(axis=1) == 0).sum()) == 179  # README: 179 with none of the classes
    assert int(targets[:, CIFAR10_CLASSES.index("automobile")].sum()) == 150
    assert int(((labels.sum(axis=1)) >= 2).sum()) == 16
    three = select(labels, src.classes, ["dog", "automobile", "bird"], negatives=False)
    assert len(three) == int((labels[:, [src.classes.index(c) for c in ("dog", "automobile", "bird")]]
                              .sum(axis=1) > 0).sum())
