"""Tiny synthetic data sets in every supported layout, for tests and smoke runs.

Each class gets its own colour (plus noise), so a small model separates them
within one epoch.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

PALETTE = np.array([[220, 40, 40], [40, 200, 40], [40, 60, 220], [230, 220, 40],
                    [200, 40, 200], [40, 210, 210], [140, 90, 40], [250, 250, 250],
                    [10, 10, 10], [128, 128, 128]], np.float32)


def synthetic_images(labels: Sequence[int], size: tuple[int, int] = (32, 32),
                     seed: int = 0) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB images, coloured by class index plus noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    base = PALETTE[np.asarray(labels) % len(PALETTE)][:, None, None, :]
    noise = rng.normal(0, 25, (len(labels), h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, img[:, :, ::-1])
    assert ok
    path.write_bytes(buf.tobytes())


def write_image_folder(root: Path, classes: Sequence[str] = ("cat", "dog", "ship"),
                       n_per_class: dict[str, int] | int = 8, size: tuple[int, int] = (32, 32),
                       splits: Sequence[str] = ("train", "test"), ext: str = ".png",
                       seed: int = 0) -> Path:
    """Write `root/<split>/<class>/NNNN<ext>`; return `root`."""
    for s_i, split in enumerate(splits):
        for k, c in enumerate(classes):
            n = n_per_class if isinstance(n_per_class, int) else n_per_class[split]
            imgs = synthetic_images([k] * n, size, seed=seed + 97 * s_i + k)
            for i, img in enumerate(imgs):
                _write(root / split / c / f"{i:04d}{ext}", img)
    return root


def write_cifar_pickle(root: Path, n_per_batch: int = 10, n_classes: int = 10,
                       archive: bool = False, protocol: int = 2, seed: int = 0) -> Path:
    """Write a CIFAR-10-format `cifar-10-batches-py/` (or its .tar.gz); return its path."""
    from training.data.datasets import CIFAR10_CLASSES

    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    names = list(CIFAR10_CLASSES[:n_classes])
    files["batches.meta"] = pickle.dumps(
        {b"label_names": [c.encode() for c in names], b"num_vis": 3072,
         b"num_cases_per_batch": n_per_batch}, protocol=protocol)
    for b, batch in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
        labels = [int(v) for v in rng.integers(0, n_classes, n_per_batch)]
        imgs = synthetic_images(labels, seed=seed + b)
        data = imgs.transpose(0, 3, 1, 2).reshape(n_per_batch, -1)  # HWC -> CHW rows
        files[batch] = pickle.dumps(
            {b"batch_label": batch.encode(), b"labels": labels, b"data": data,
             b"filenames": [f"img_{b}_{i}.png".encode() for i in range(n_per_batch)]},
            protocol=protocol)
    root.mkdir(parents=True, exist_ok=True)
    if archive:
        path = root / "cifar-10-python.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            for name, blob in files.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
        return path
    d = root / "cifar-10-batches-py"
    d.mkdir(exist_ok=True)
    for name, blob in files.items():
        (d / name).write_bytes(blob)
    return d


def write_labels_csv(root: Path, rows: Sequence[tuple[str, Sequence[str]]],
                     classes: Sequence[str], seed: int = 0) -> Path:
    """Write `root/labels.csv` and one image per row (sizes vary); return the CSV path."""
    rng = np.random.default_rng(seed)
    lines = ["path,labels"]
    for i, (rel, labels) in enumerate(rows):
        k = classes.index(labels[0]) if labels else len(PALETTE) - 1
        size = (int(rng.integers(40, 80)), int(rng.integers(40, 80)))
        _write(root / rel, synthetic_images([k], size, seed=seed + i)[0])
        lines.append(f"{rel},{'|'.join(labels)}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def randomize_constant_weights(model, seed: int = 0):
    """Replace constant-initialised weights (zero biases/betas, unit gammas, 1e-6 layer
    scales) by random values, so that every add and scale of an untrained model matters
    (for conversion parity checks and latency runs). Returns the model."""
    rng = np.random.default_rng(seed)
    ws = []
    for w in model.get_weights():
        if w.size > 1 and np.all(w == w.flat[0]):
            w = (rng.uniform(-0.5, 0.5, w.shape) + (1.0 if w.flat[0] == 1 else 0.0)).astype(w.dtype)
        ws.append(w)
    model.set_weights(ws)
    return model
