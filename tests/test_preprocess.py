import cv2
import numpy as np
import pytest

from edge.preprocess import BatchBuffer, model_input, render_views
from edge.tiling import View, view_boxes


def _render_reference(bgr, views, input_size):
    """The views rendered one by one, without render_views' cached plans."""
    in_h, in_w = input_size
    scale = max(in_w / min(v.width for v in views), in_h / min(v.height for v in views))
    if scale < 0.5:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        h, w = bgr.shape[:2]
        scaled = []
        for v in views:
            v = v.scaled(scale, scale)
            x1, y1 = min(max(v.x1, v.x0 + 1), w), min(max(v.y1, v.y0 + 1), h)
            scaled.append(View(v.name, min(v.x0, x1 - 1), min(v.y0, y1 - 1), x1, y1))
        views = scaled
    out = []
    for v in views:
        crop = bgr[v.y0:v.y1, v.x0:v.x1]
        h, w = crop.shape[:2]
        k = min(w // in_w, h // in_h)
        if k >= 2:  # exact k x k box average of the crop trimmed to whole boxes
            crop = crop[:h - h % k, :w - w % k]
            boxed = cv2.resize(crop, (w // k, h // k), interpolation=cv2.INTER_AREA)
            mean = crop.reshape(h // k, k, w // k, k, 3).mean(axis=(1, 3))
            assert np.abs(boxed - mean).max() <= 0.5 + 1e-9  # OpenCV's integer path: the box mean, rounded
            crop = boxed
            h, w = crop.shape[:2]
        if w < in_w or h < in_h:
            interpolation = cv2.INTER_CUBIC  # upscaling (any axis)
        elif w >= 3 * in_w or h >= 3 * in_h:
            interpolation = cv2.INTER_AREA  # strong shrink: antialiased
        else:
            interpolation = cv2.INTER_LINEAR  # mild shrink
        out.append(cv2.resize(crop, (in_w, in_h), interpolation=interpolation))
    return np.stack(out)


@pytest.mark.parametrize("w,h", [(1, 1), (3, 200), (31, 33), (64, 64), (120, 91), (240, 135), (480, 270),
                                 (500, 375), (1000, 17)])
@pytest.mark.parametrize("input_size", [(32, 32), (24, 40), (128, 128)])
def test_render_views_matches_reference(w, h, input_size):
    rng = np.random.default_rng(w * 7919 + h)
    bgr = rng.integers(0, 256, (h, w, 3), np.uint8)
    for tiling in (True, False):
        views = view_boxes(w, h, 0.6, tiling)
        want = _render_reference(bgr, views, input_size)
        for _ in range(2):  # the second call uses the cached plan
            np.testing.assert_array_equal(render_views(bgr, views, input_size), want)


def test_model_input_is_float_rgb():
    bgr = np.random.default_rng(0).integers(0, 256, (6, 8, 5, 3), np.uint8)
    x = model_input(bgr)
    assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape == bgr.shape
    np.testing.assert_array_equal(x, bgr[..., ::-1].astype(np.float32))


def test_batch_buffer_packs_in_order_and_grows():
    rng = np.random.default_rng(0)
    parts = [rng.random((k, 4, 5, 3)).astype(np.float32) for k in (6, 1, 6, 12)]
    buf = BatchBuffer(6, (4, 5))
    assert buf.pack(parts[:1]) is parts[0]  # one image: no copy
    np.testing.assert_array_equal(buf.pack(parts), np.concatenate(parts))
    np.testing.assert_array_equal(buf.pack(parts[2:0:-1]), np.concatenate(parts[2:0:-1]))
    np.testing.assert_array_equal(buf.pack([np.asfortranarray(p) for p in parts]), np.concatenate(parts))
    with pytest.raises(ValueError):
        buf.pack([parts[0], np.zeros((6, 4, 4, 3), np.float32)])
