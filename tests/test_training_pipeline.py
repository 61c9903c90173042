"""MixUp and the tf.data pipeline (training.data.tfdata)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from edge.preprocess import render_views  # noqa: E402
from edge.tiling import view_boxes  # noqa: E402
from training.data.cache import load_split  # noqa: E402
from training.data.datasets import open_source  # noqa: E402
from training.data.labels import select  # noqa: E402
from training.data.synthetic import write_image_folder, write_labels_csv  # noqa: E402
from training.data.tfdata import (  # noqa: E402
    make_dataset,
    mixup,
    mixup_batch,
    render_whole,
    resize_images,
    sample_mixup_lambda,
)

pytestmark = pytest.mark.train


def test_mixup_lambda_range_and_alpha() -> None:
    lam = sample_mixup_lambda(20000, 0.2, seed=1).numpy()
    assert lam.shape == (20000,) and lam.min() >= 0.0 and lam.max() <= 1.0
    assert abs(lam.mean() - 0.5) < 0.02  # Beta(a, a) is symmetric
    middle_02 = np.mean((lam > 0.1) & (lam < 0.9))
    middle_1 = np.mean(((u := sample_mixup_lambda(20000, 1.0, seed=2).numpy()) > 0.1) & (u < 0.9))
    assert middle_02 < 0.45 < 0.75 < middle_1  # small alpha: mostly near 0 or 1
    assert np.all(sample_mixup_lambda(5, 0.0).numpy() == 1.0)


def test_mixup_formula_and_labels() -> None:
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)), tf.float32)
    y = tf.constant(np.eye(4, dtype=np.float32))
    lam = tf.constant([1.0, 0.0, 0.25, 0.5])
    partner = tf.constant([1, 2, 3, 0])
    mx, my = mixup(x, y, lam, partner)
    assert mx.shape == x.shape and my.shape == y.shape
    np.testing.assert_allclose(mx[0], x[0])
    np.testing.assert_allclose(mx[1], x[2])
    np.testing.assert_allclose(mx[2], 0.25 * x[2] + 0.75 * x[3], rtol=1e-5)
    np.testing.assert_allclose(my[2], [0, 0, 0.25, 0.75])
    np.testing.assert_allclose(tf.reduce_sum(my, axis=1), np.ones(4), rtol=1e-6)


def test_mixup_batch_shapes_and_mass() -> None:
    x = tf.random.uniform((16, 8, 8, 3), 0, 255)
    y = tf.one_hot(tf.range(16) % 3, 3)
    mx, my = mixup_batch(x, y, 0.2, seed=3)
    assert mx.shape == (16, 8, 8, 3) and my.dtype == tf.float32
    np.testing.assert_allclose(tf.reduce_sum(my, axis=1), np.ones(16), rtol=1e-5)
    assert float(tf.reduce_min(mx)) >= 0.0 and float(tf.reduce_max(mx)) <= 255.0


def test_resize_renders_as_the_runtime() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    img[:, :, 8:] = 255  # a hard edge overshoots with bicubic: the runtime's uint8 clips it
    for size in ((40, 40), (8, 12)):  # grow (bicubic) and shrink, as the runtime's whole view
        out = resize_images(img, size).numpy()
        assert out.shape == (2, *size, 3) and out.dtype == np.float32
        for i in range(2):
            want = render_views(img[i], view_boxes(16, 16, tiling=False), size)[0]
            np.testing.assert_array_equal(out[i], want.astype(np.float32))
    one = render_whole(img[0], (40, 40))  # a single image, uint8
    assert one.dtype == np.uint8 and one.shape == (40, 40, 3)
    np.testing.assert_array_equal(resize_images(img[0], (40, 40)).numpy(), one.astype(np.float32))
    same = resize_images(img, (16, 16)).numpy()
    np.testing.assert_array_equal(same, img.astype(np.float32))


def test_dataset_uniform_and_mixed_sizes(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "set", n_per_class=5)
    sp = load_split(open_source(root), "train", tmp_path / "cache", progress=False)
    sel = select(sp.labels, sp.classes, ["dog", "cat"], negatives=True)
    ds = make_dataset(sp, sel, (48, 48), batch_size=4, training=True, mixup_alpha=0.2)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    assert xs[0].shape == (4, 48, 48, 3) and xs[0].dtype == np.float32
    assert sum(len(y) for y in ys) == 15 and ys[0].shape[1] == 2
    ds = make_dataset(sp, sel, (32, 32), batch_size=32)
    x, y = next(iter(ds))
    np.testing.assert_array_equal(x.numpy(), sp.images(sel.indices).astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), sel.targets)

    csv_path = write_labels_csv(tmp_path / "csv", [(f"i/{k}.jpg", ["cat"] if k % 2 else ["dog"])
                                                   for k in range(6)], ["cat", "dog"])
    sp = load_split(open_source(csv_path), "all", tmp_path / "cache", progress=False)
    assert sp.uniform_shape is None
    sel = select(sp.labels, sp.classes, ["cat", "dog"])
    x, y = next(iter(make_dataset(sp, sel, (40, 40), batch_size=6)))
    assert x.shape == (6, 40, 40, 3) and y.numpy().sum() == 6
