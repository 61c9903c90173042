"""The per-view HD model distilled into the backbone of its one-pass graph.

Rewritten to see a frame once (`convert.onepass`), the HD backbone gives each view the mean of its
window of one feature map: the crop is seen at 192 px instead of 224, with the context around it, so
its features drift from those the head learnt. The student is the same backbone (its weights read back
from the graph, `training.models.from_onnx`) fed whole frames at grid x 32 px; it learns to give each
window the features the per-view model gives the view alone, and the same class logits through the
unchanged head:

    loss = mean((f_student - f_view)^2) / var(f_view) + BCE(sigmoid(z_view), z_student)

on the fit photos' cached per-view evidence (`extract.SetEvidence`: no labels are used, so every photo
teaches), batch norms frozen, only convolution kernels trained; the epoch with the least loss on the
held-out photos is kept and its kernels are written into a copy of the per-view graph, which
`convert.onepass` then rewrites. Each epoch is saved with the optimizer's state, so `run_open` resumes an
interrupted distillation (and a longer one continues a shorter one, its cosine schedule stretched).
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from convert.metadata import attach, read_meta
from convert.onepass import STRIDE, windows
from edge.atomic import atomic_path, atomic_write
from edge.inputs import file_sha256
from training.openworld.extract import SetEvidence, frames, set_targets
from training.openworld.head_graph import head_weights
from training.openworld.tune import keras_head


@dataclass
class Rows:
    """Photos to distil on: (P, S, S, 3) uint8 frames and the per-view model's (P, 6, F) features and
    (P, 6, K) logits."""

    frames: np.ndarray
    features: np.ndarray
    logits: np.ndarray


def distil_rows(paths: list[str], rows: list[np.ndarray], evs: list[SetEvidence], held: list[np.ndarray],
                size: int, classes: list[str], cache: Path | None = None) -> tuple[Rows, Rows]:
    """The fit and the held-out photos of every set: frames rendered at `size` as the runtime renders a
    one-pass input, with their per-view evidence (`evs`, over `rows`; `held` marks the held-out ones)."""
    parts: dict[bool, list[tuple]] = {False: [], True: []}
    for path, r, ev, h in zip(paths, rows, evs, held, strict=True):
        f = frames(set_targets(path, classes, cache)[0], r, size)
        for part in (False, True):
            parts[part].append((f[h == part], ev.features[h == part], ev.logits[h == part]))
    fit, held_rows = (Rows(*(np.concatenate([p[i] for p in parts[k]]) for i in range(3))) for k in (False, True))
    return fit, held_rows


def student(hd: onnx.ModelProto, arch: str, classes: int, grid: int, fraction: float):
    """The per-view graph's backbone as Keras, at grid x STRIDE px, returning each view's window mean of its
    feature map, (N, 6, F); batch norms frozen."""
    import keras

    from training.models.factory import build_model
    from training.models.from_onnx import load_backbone

    model = build_model(arch, classes, grid * STRIDE)
    load_backbone(model, hd)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    fmap = model.get_layer("head_gap").input
    cells = windows(grid, fraction)
    means = [keras.layers.Lambda(lambda t, c=c: keras.ops.mean(t[:, c[1]:c[3], c[0]:c[2], :], axis=(1, 2)))(fmap)
             for c in cells]
    views = keras.layers.Lambda(lambda ts: keras.ops.stack(ts, axis=1), name="views")(means)
    return keras.Model(model.input, views, name="one_pass_student")


def _losses(net, head, x, ft, zt, scale: float):
    """The feature and logit losses of frames `x` against the per-view model's features `ft` and logits `zt`."""
    import tensorflow as tf

    f = net(tf.cast(x, tf.float32))
    z = head(tf.reshape(f, (-1, f.shape[-1])))
    zt = tf.reshape(zt, (-1, zt.shape[-1]))
    feat = tf.reduce_mean(tf.square(f - ft)) / scale
    logit = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(tf.sigmoid(zt), z) -
                           tf.nn.sigmoid_cross_entropy_with_logits(tf.sigmoid(zt), zt))
    return feat, logit


def _batch(rows: Rows, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return rows.frames[idx], rows.features[idx], rows.logits[idx]


def held_loss(net, head, rows: Rows, scale: float, batch: int = 32) -> dict[str, float]:
    """Mean feature and logit losses over `rows` (no training)."""
    n = len(rows.frames)
    parts = [[float(v) * len(idx) for v in _losses(net, head, *_batch(rows, idx), scale)]
             for idx in np.array_split(np.arange(n), -(-n // batch))]
    feat, logit = (sum(p[i] for p in parts) / n for i in (0, 1))
    return {"features": round(feat, 5), "logits": round(logit, 5), "total": round(feat + logit, 5)}


def _save(values: list, file: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, *[np.asarray(v) for v in values])
    atomic_write(file, buf.getvalue(), binary=True)


def _load(file: Path) -> list[np.ndarray]:
    z = np.load(file)
    return [z[f"arr_{i}"] for i in range(len(z.files))]


def distil(hd_onnx: Path, fit: Rows, held: Rows, out: Path, arch: str, grid: int, fraction: float,
           epochs: int = 3, lr: float = 1e-4, batch: int = 16, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """Train the student on `fit`, keep the epoch of least `held` loss, write `out/hd.onnx` (the per-view
    graph with the student's kernels; resumes from `out/state.json`); returns it and the report."""
    import keras
    import tensorflow as tf

    from training.models.from_onnx import write_kernels

    hd = onnx.load(str(hd_onnx))
    names, eps = head_weights(hd)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in hd.graph.initializer}
    head = keras_head([inits[n] for n in names], eps)
    head.trainable = False
    keras.utils.set_random_seed(seed)
    net = student(hd, arch, head.output.shape[-1], grid, fraction)
    scale = float(np.var(fit.features))
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "state.json"
    if state_file.exists():
        state = {**json.loads(state_file.read_text()), "epochs": epochs}
        net.set_weights(_load(out / "last.npz"))
    else:
        state = {"held": [held_loss(net, head, held, scale)], "best_epoch": 0, "epochs": epochs, "lr": lr,
                 "batch": batch, "fit_photos": len(fit.frames), "held_photos": len(held.frames)}
    steps = -(-len(fit.frames) // batch)
    opt = _optimizer(net, lr, steps * epochs, out / "last_optimizer.npz")

    @tf.function(reduce_retracing=True)
    def step(x, ft, zt):
        with tf.GradientTape() as tape:
            feat, logit = _losses(net, head, x, ft, zt, scale)
            total = feat + logit
        opt.apply_gradients(zip(tape.gradient(total, net.trainable_variables), net.trainable_variables,
                                strict=True))
        return feat, logit

    for epoch in range(len(state["held"]), epochs + 1):
        order = np.random.default_rng(seed + epoch).permutation(len(fit.frames))
        bar = tqdm(np.array_split(order, steps), desc=f"distilling, epoch {epoch}/{epochs}", unit="batch")
        for idx in bar:
            feat, logit = step(*_batch(fit, np.sort(idx)))
            bar.set_postfix(features=f"{float(feat):.4f}", logits=f"{float(logit):.4f}")
        state["held"].append(held_loss(net, head, held, scale))
        _save(net.get_weights(), out / "last.npz")
        _save([v.numpy() for v in opt.variables], out / "last_optimizer.npz")
        if state["held"][-1]["total"] < state["held"][state["best_epoch"]]["total"]:
            state["best_epoch"] = epoch
            _save(net.get_weights(), out / "best.npz")
        atomic_write(state_file, json.dumps(state, indent=1))
    if state["best_epoch"]:  # else no epoch beat the start: the graph's kernels stay as they are
        net.set_weights(_load(out / "best.npz"))
        write_kernels(net, hd)
    meta = read_meta(hd, str(hd_onnx))
    done = {"from_sha256": file_sha256(hd_onnx), "grid": grid, **state}
    attach(hd, dataclasses.replace(meta, provenance={**meta.provenance, "one_pass_distilled": done}))
    with atomic_path(out / "hd.onnx") as tmp:
        onnx.save(hd, str(tmp))
    return out / "hd.onnx", state


def _optimizer(net, lr: float, total_steps: int, saved: Path):
    """Adam on a cosine schedule over `total_steps`, with the moments and step count of `saved` if it exists."""
    import keras

    opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, total_steps))
    opt.build(net.trainable_variables)
    if saved.exists():
        for var, value in zip(opt.variables, _load(saved), strict=True):
            var.assign(value)
    return opt
