"""EXIF orientation: every orientation (1-8) of every format that carries it comes out upright exactly
once, as Pillow's `ImageOps.exif_transpose` makes it (pixels and the reported width and height), through
the decoder and through a scan's record."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps, features

from edge.cli import main
from edge.decode import decode

BASE = cv2.resize(np.random.default_rng(0).integers(0, 256, (12, 16, 3), np.uint8), (64, 48),
                  interpolation=cv2.INTER_NEAREST)  # 64x48 blocks of 4x4: lossy codecs keep them
FORMATS = {"JPEG": {"quality": 100}, "MPO": {"quality": 100, "save_all": True}, "PNG": {},
           "WEBP": {"lossless": True}, "TIFF": {}, "TIFF-tiffinfo": {}, "AVIF": {"quality": 100}}


def oriented(fmt: str, orientation: int) -> bytes:
    """BASE saved as `fmt` with EXIF orientation `orientation` (TIFF-tiffinfo: as a TIFF tag, `tiffinfo`)."""
    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("this Pillow writes no AVIF")
    im, buf, kw = Image.fromarray(BASE), io.BytesIO(), dict(FORMATS[fmt])
    if fmt == "MPO":
        kw["append_images"] = [im]
    if fmt == "TIFF-tiffinfo":
        im.save(buf, "TIFF", tiffinfo={274: orientation})
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(buf, fmt, exif=exif, **kw)
    return buf.getvalue()


def upright(data: bytes) -> np.ndarray:
    """Pillow's upright picture, as BGR."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))[:, :, ::-1]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_orientation_is_applied_once(fmt, orientation):
    data = oriented(fmt, orientation)
    want = upright(data)
    got = decode(data)
    assert (got.width, got.height) == (want.shape[1], want.shape[0])
    assert got.bgr.shape == want.shape
    assert np.abs(got.bgr.astype(int) - want).mean() < 6  # lossy formats: close, the layout exactly


@pytest.mark.parametrize("orientation", [2, 5, 6, 7, 8])
def test_reduced_jpeg_decoding_stays_upright(orientation):
    big = cv2.resize(BASE, (640, 480), interpolation=cv2.INTER_NEAREST)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "JPEG", exif=exif, quality=100)
    want = upright(buf.getvalue())
    got = decode(buf.getvalue(), target=lambda w, h: (0.6, (64, 64)))
    assert (got.width, got.height) == (want.shape[1], want.shape[0]) and got.scale == 0.25
    small = cv2.resize(want, (got.bgr.shape[1], got.bgr.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(got.bgr.astype(int) - small).mean() < 6


@pytest.mark.parametrize("fmt,suffix", [("TIFF-tiffinfo", ".tif"), ("PNG", ".png"), ("WEBP", ".webp")])
def test_a_scan_reports_the_upright_size(tmp_path, colour_models, fmt, suffix):
    for o in (1, 3, 6, 8):
        (tmp_path / f"o{o}{suffix}").write_bytes(oriented(fmt, o))
    res = CliRunner().invoke(main, ["scan", str(tmp_path), "--models", str(colour_models)])
    assert res.exit_code == 0, res.output
    sizes = {json.loads(line)["path"][-len(suffix) - 2:-len(suffix)]: (json.loads(line)["width"],
             json.loads(line)["height"]) for line in res.stdout.splitlines()}
    assert sizes == {"o1": (64, 48), "o3": (64, 48), "o6": (48, 64), "o8": (48, 64)}
