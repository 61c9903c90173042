"""tf.data input pipeline over cached arrays, resized as the runtime resizes, with MixUp.

Images leave the pipeline as float32 0..255 RGB NHWC at the model's input size
(normalisation is inside the model); labels as float32 multi-hot. Each image is
rendered to the input exactly as the runtime renders its whole view
(`edge.preprocess.render_views`: uint8, OpenCV bicubic when upscaling), so what
a model learns from is what it is shown when it runs (trained on TensorFlow's
float bicubic resize, the fine-tuned Standard scored 88.7% CIFAR-10 top-1 in
Keras and 86.7% through the runtime).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from edge.preprocess import render_views
from edge.tiling import view_boxes
from training.data.cache import CachedSplit
from training.data.labels import Selection

AUTOTUNE = tf.data.AUTOTUNE


def render_whole(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 images (N,H,W,3 or H,W,3) at `size` (h, w), uint8: each one's whole view as the runtime
    renders it."""
    images = np.asarray(images)
    one = images.ndim == 3
    batch = images[None] if one else images
    out = np.empty((len(batch), *size, 3), np.uint8)
    for i, img in enumerate(batch):
        render_views(np.ascontiguousarray(img), view_boxes(img.shape[1], img.shape[0], tiling=False),
                     size, out=out[i:i + 1])
    return out[0] if one else out


def resize_images(images: tf.Tensor | np.ndarray, size: tuple[int, int]) -> tf.Tensor:
    """uint8 images (N,H,W,3 or H,W,3) rendered to `size` as the runtime renders them (`render_whole`),
    float32 0..255."""
    images = tf.convert_to_tensor(images)
    size = (int(size[0]), int(size[1]))
    if tuple(images.shape[-3:-1]) == size:
        return tf.cast(images, tf.float32)
    out = tf.numpy_function(lambda x: render_whole(x, size), [images], tf.uint8, stateful=False)
    out.set_shape([*images.shape[:-3], *size, 3])
    return tf.cast(out, tf.float32)


def sample_mixup_lambda(n: int | tf.Tensor, alpha: float, seed: int | None = None) -> tf.Tensor:
    """Draw `n` MixUp weights from Beta(alpha, alpha) (as two Gamma draws); 1.0 when alpha <= 0."""
    if alpha <= 0:
        return tf.ones([n], tf.float32)
    s2 = None if seed is None else seed + 1
    a = tf.random.gamma([n], alpha, dtype=tf.float32, seed=seed)
    b = tf.random.gamma([n], alpha, dtype=tf.float32, seed=s2)
    return a / tf.maximum(a + b, 1e-12)


def mixup(images: tf.Tensor, labels: tf.Tensor, lam: tf.Tensor,
          partner: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mix each sample i with sample `partner[i]`: lam*x_i + (1-lam)*x_p, same for labels."""
    images = tf.cast(images, tf.float32)
    labels = tf.cast(labels, tf.float32)
    lam = tf.cast(lam, tf.float32)
    li = tf.reshape(lam, [-1, 1, 1, 1])
    ll = tf.reshape(lam, [-1, 1])
    mixed_x = li * images + (1.0 - li) * tf.gather(images, partner)
    mixed_y = ll * labels + (1.0 - ll) * tf.gather(labels, partner)
    return mixed_x, mixed_y


def mixup_batch(images: tf.Tensor, labels: tf.Tensor, alpha: float = 0.2,
                seed: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """MixUp a batch with a random partner per sample and lambda ~ Beta(alpha, alpha)."""
    n = tf.shape(images)[0]
    lam = sample_mixup_lambda(n, alpha, seed)
    partner = tf.random.shuffle(tf.range(n), seed=seed)
    return mixup(images, labels, lam, partner)


def make_dataset(split: CachedSplit, sel: Selection, input_size: tuple[int, int],
                 batch_size: int, training: bool = False, mixup_alpha: float = 0.0,
                 seed: int = 0, drop_remainder: bool = False, augment: bool = True) -> tf.data.Dataset:
    """Batches of (float32 0..255 images at `input_size`, float32 targets) for `sel`.

    Training shuffles every epoch, flips and shifts each image (up to 1/8 of its
    side, reflected borders) when `augment`, and applies MixUp when `mixup_alpha > 0`.
    `drop_remainder` drops a last partial batch (multi-replica training: TF on CPU
    fails on a replica's empty share). Same-size splits are gathered a batch at a time from the memory map;
    mixed-size splits are read and resized one image at a time.
    """
    size = (int(input_size[0]), int(input_size[1]))
    idx = np.asarray(sel.indices, np.int64)
    ds = tf.data.Dataset.from_tensor_slices((idx, sel.targets.astype(np.float32)))
    if training:
        ds = ds.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True)
    shape = split.uniform_shape
    if shape is not None:
        h, w = shape

        def gather(i: np.ndarray) -> np.ndarray:
            return split.images(i)

        def load(i: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            x = tf.numpy_function(gather, [i], tf.uint8, stateful=False)
            x.set_shape([None, h, w, 3])
            return resize_images(x, size), y

        ds = ds.batch(batch_size, drop_remainder).map(load, num_parallel_calls=AUTOTUNE)
    else:
        def one(i: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(split.image(int(i)))

        def load1(i: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            x = tf.numpy_function(one, [i], tf.uint8, stateful=False)
            x.set_shape([None, None, 3])
            x = resize_images(x, size)
            return x, y

        ds = ds.map(load1, num_parallel_calls=AUTOTUNE).batch(batch_size, drop_remainder)
    if training and augment:
        flip = keras.layers.RandomFlip("horizontal", seed=seed)
        shift = keras.layers.RandomTranslation(0.125, 0.125, fill_mode="reflect", seed=seed)
        ds = ds.map(lambda x, y: (shift(flip(x), training=True), y), num_parallel_calls=AUTOTUNE)
    if training and mixup_alpha > 0:
        ds = ds.map(lambda x, y: mixup_batch(x, y, mixup_alpha), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def predict_arrays(model, split: CachedSplit, sel: Selection, input_size: tuple[int, int],
                   batch_size: int = 256) -> np.ndarray:
    """Model scores (n, K) for `sel`, in order."""
    ds = make_dataset(split, sel, input_size, batch_size, training=False).map(lambda x, y: x)
    return np.asarray(model.predict(ds, verbose=0), np.float32)
