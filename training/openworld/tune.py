"""Fine-tuning the HD model's head on frozen per-view evidence (the one-pass graph's window features).

A one-pass graph (`convert.onepass`) feeds the head each view's window of one feature map, not the
pooled features of the view seen alone: the context around the window leaks in and the crop is seen
at 192 px instead of 224. The head, `LayerNorm -> Dense -> GELU -> Dense` (the logits), is small, so it
is fine-tuned on the cached evidence (`extract.SetEvidence`: features and targets per view, classes a
set does not label masked), every set weighted equally, from the graph's own weights, at a low learning
rate, stopping on the held-out photos' loss (the best epoch's weights are kept). The tuned weights are
written back into the graph's initializers: the same graph, the same multiply-adds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from tqdm import tqdm

from edge.atomic import atomic_path
from training.data.photos import UNKNOWN
from training.openworld.head import set_weights
from training.openworld.head_graph import head_weights


def keras_head(weights: list[np.ndarray], eps: float):
    """The head as a Keras model from its weights (`head_weights`' order): pooled features -> logits."""
    import keras

    f = keras.Input((weights[0].shape[0],))
    x = keras.layers.LayerNormalization(epsilon=eps, name="ln")(f)
    x = keras.layers.Dense(weights[2].shape[1], activation=lambda t: keras.activations.gelu(t, approximate=False),
                           name="dense")(x)
    model = keras.Model(f, keras.layers.Dense(weights[4].shape[1], name="logits")(x))
    model.get_layer("ln").set_weights(weights[:2])
    model.get_layer("dense").set_weights(weights[2:4])
    model.get_layer("logits").set_weights(weights[4:])
    return model


def _masked(rows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, F) features, (n, K) targets with UNKNOWN as 0 and (n, K) weights (0 where unknown; per set, equal
    shares) of the views of `rows` (`run._stack`'s arrays)."""
    f = rows["features"].reshape(-1, rows["features"].shape[-1]).astype(np.float32)
    y = rows["targets"].reshape(-1, rows["targets"].shape[-1])
    known = y != UNKNOWN
    sets = np.repeat(rows["set"], rows["targets"].shape[1])
    w = set_weights(sets, known.any(1))[:, None] * known * len(f)
    return f, np.where(known, y, 0).astype(np.float32), w.astype(np.float32)


def tune_head(graph: Path, fit: dict[str, np.ndarray], held: dict[str, np.ndarray], out: Path,
              lr: float = 3e-5, epochs: int = 12, batch: int = 256,
              seed: int = 0) -> tuple[dict[str, Any], Callable[[np.ndarray], np.ndarray]]:
    """Fine-tune `graph`'s head on the fit rows, keep the epoch of least held-out loss, write the graph with
    those weights to `out`; returns the per-epoch losses and the kept epoch, and the tuned head's logits of
    (n, F) features."""
    import keras
    import tensorflow as tf

    model = onnx.load(str(graph))
    names, eps = head_weights(model)
    inits = {t.name: t for t in model.graph.initializer}
    head = keras_head([numpy_helper.to_array(inits[n]) for n in names], eps)
    keras.utils.set_random_seed(seed)
    head.compile(optimizer=keras.optimizers.AdamW(lr, weight_decay=1e-4),
                 loss=lambda y, z: tf.nn.sigmoid_cross_entropy_with_logits(y, z))
    (fx, fy, fw), (hx, hy, hw) = _masked(fit), _masked(held)

    def held_loss() -> float:
        z = head.predict(hx, batch_size=4096, verbose=0)
        bce = np.logaddexp(0, z) - hy * z
        return float(np.sum(hw * bce) / np.sum(hw))

    losses, best = [held_loss()], (held_loss(), 0, head.get_weights())
    for epoch in tqdm(range(1, epochs + 1), desc="tuning the HD head", unit="epoch"):
        head.fit(fx, fy, sample_weight=fw, batch_size=batch, epochs=1, shuffle=True, verbose=0)
        losses.append(held_loss())
        if losses[-1] < best[0]:
            best = (losses[-1], epoch, head.get_weights())
    for name, value in zip(names, best[2], strict=True):
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    head.set_weights(best[2])
    report = {"held_loss": [round(v, 5) for v in losses], "kept_epoch": best[1], "lr": lr, "epochs": epochs,
              "batch": batch}
    return report, lambda f: np.asarray(head.predict(f.astype(np.float32), batch_size=4096, verbose=0))
