import io

import cv2
import numpy as np
import pytest
from PIL import Image

from edge.decode import DecodeError, decode, reduction_factor


def png_bytes(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def pil_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def test_grayscale_becomes_three_channels():
    d = decode(png_bytes(np.full((20, 30), 77, np.uint8)))
    assert d.bgr.shape == (20, 30, 3) and d.bgr.dtype == np.uint8 and (d.bgr == 77).all()


def test_sixteen_bit_is_scaled_to_eight():
    d = decode(png_bytes(np.full((8, 8, 3), 65535, np.uint16)))
    assert d.bgr.dtype == np.uint8 and (d.bgr == 255).all()


def test_alpha_is_composited_on_white():
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[:5, :, :3] = (0, 0, 255)
    rgba[:5, :, 3] = 255  # top half opaque red (BGR), bottom half fully transparent
    d = decode(png_bytes(rgba))
    assert tuple(d.bgr[0, 0]) == (0, 0, 255) and tuple(d.bgr[9, 9]) == (255, 255, 255)


def test_palette_and_gif():
    im = Image.new("P", (12, 9))
    im.putpalette([0, 255, 0] * 256)
    for fmt in ("PNG", "GIF"):
        d = decode(pil_bytes(im, fmt))
        assert d.bgr.shape == (9, 12, 3) and tuple(d.bgr[4, 4]) == (0, 255, 0)


def test_one_bit_and_multipage_tiff():
    pages = [Image.new("1", (16, 8), 1), Image.new("1", (16, 8), 0)]
    d = decode(pil_bytes(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    assert d.bgr.shape == (8, 16, 3) and (d.bgr == 255).all()  # first page


@pytest.mark.parametrize("orientation,size", [(1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))])
def test_exif_orientation(orientation, size):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255  # a white band on the left of the stored pixels
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    d = decode(pil_bytes(im, "JPEG", exif=exif, quality=95))
    assert (d.width, d.height) == size and d.bgr.shape[1::-1] == size
    # where the white band ends up after the upright rotation
    y, x = {1: (10, 2), 3: (10, 37), 6: (2, 10), 8: (37, 10)}[orientation]
    assert d.bgr[y, x].mean() > 200


def test_tiny_and_extreme_aspect():
    assert decode(png_bytes(np.zeros((1, 1, 3), np.uint8))).bgr.shape == (1, 1, 3)
    assert decode(png_bytes(np.zeros((2, 3000, 3), np.uint8))).bgr.shape == (2, 3000, 3)


@pytest.mark.parametrize("data,match", [(b"", "empty"), (b"hello, not an image", "not an image"),
                                        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "corrupt|not an image")])
def test_bad_bytes(data, match):
    with pytest.raises(DecodeError, match=match):
        decode(data)


def test_reduced_jpeg_decoding_keeps_original_size():
    arr = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), np.uint8)
    ok, buf = cv2.imencode(".jpg", arr)
    d = decode(buf.tobytes(), lambda w, h: (0.6, (128, 128)))
    assert (d.width, d.height) == (1920, 1080)
    assert d.bgr.shape[:2] == (1080 // 4, 1920 // 4)  # views stay >= 128 px at 1/4
    assert reduction_factor(500, 375, 0.6, (128, 128)) == 1
    assert reduction_factor(4000, 3000, 0.6, (32, 32)) == 8
