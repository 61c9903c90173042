"""Image decoding: bytes -> 8-bit BGR, whatever the file holds.

OpenCV decodes (fast, and for JPEG it can decode at 1/2, 1/4 or 1/8 size when
the views are much larger than the model input); Pillow handles what OpenCV
cannot. Grayscale, alpha, 16-bit, palette, multi-page and EXIF-rotated files
all come out as upright 3-channel uint8 BGR.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import MAX_PIXELS
from .errors import BadImage, NotAnImage, TooLarge

# Decoding problems are reported in each record; OpenCV's own log lines would flood a scan.
# (cv2.utils.logging is in the bindings from 4.13; cv2.setLogLevel(0), silent, in older ones and JetPack's.)
if hasattr(cv2.utils, "logging"):
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
else:
    cv2.setLogLevel(0)
# `decode` checks every header against its `max_pixels` before decoding, so Pillow's own
# decompression-bomb limit (a warning, then an error at twice its value) is not needed.
Image.MAX_IMAGE_PIXELS = None

_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
            4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
# EXIF orientation -> operations that make the picture upright
_ORIENT = {2: ("flip", 1), 3: ("rot", cv2.ROTATE_180), 4: ("flip", 0),
           5: ("transpose", None), 6: ("rot", cv2.ROTATE_90_CLOCKWISE),
           7: ("transverse", None), 8: ("rot", cv2.ROTATE_90_COUNTERCLOCKWISE)}


class DecodeError(BadImage, ValueError):
    """A file that is not a decodable image, or one too large to decode (code `undecodable_image`)."""


class NotImageData(DecodeError, NotAnImage):
    """Bytes that are no image: empty, or in no format Pillow or OpenCV knows (415)."""

    code = NotAnImage.code
    http_status = NotAnImage.http_status


class ImageTooLarge(DecodeError, TooLarge):
    """An image whose header declares more pixels than the limit, refused undecoded (413)."""

    code = "image_too_large"
    http_status = TooLarge.http_status


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse an image larger than `max_pixels` (before any of its pixels are decoded)."""
    if width * height > max_pixels:
        raise ImageTooLarge(f"image too large: {width}x{height} is {width * height / 1e6:.0f} megapixels, "
                          f"over the limit of {max_pixels / 1e6:g} (--max-pixels)")


@dataclass(frozen=True)
class Decoded:
    """A decoded image: upright BGR pixels and the file's own (upright) size."""

    bgr: np.ndarray
    width: int
    height: int

    @property
    def scale(self) -> float:
        """Decoded pixels per original pixel (1, or 1/2, 1/4, 1/8 for reduced JPEG decoding)."""
        return self.bgr.shape[1] / self.width


def reduction_factor(width: int, height: int, fraction: float, input_size: tuple[int, int]) -> int:
    """The largest JPEG decode reduction (1, 2, 4, 8) that keeps every view at
    least as large as the model input."""
    in_h, in_w = input_size
    view_w, view_h = width * fraction, height * fraction
    factor = 1
    for f in (2, 4, 8):
        if view_w / f >= in_w and view_h / f >= in_h:
            factor = f
    return factor


Target = Callable[[int, int], "tuple[float, tuple[int, int]] | None"]


def decode(data: bytes, target: Target | None = None, max_pixels: int = MAX_PIXELS) -> Decoded:
    """Decode image bytes. `target(width, height)` may return the (view fraction,
    model input size) the image is for: JPEGs are then decoded at reduced size.
    An image whose header declares more than `max_pixels` is refused undecoded."""
    if not data:
        raise NotImageData("empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = im.format, im.size
            check_pixels(w, h, max_pixels)
            orientation = im.getexif().get(0x0112, 1) if fmt in ("JPEG", "TIFF", "WEBP", "PNG") else 1
    except UnidentifiedImageError:  # Pillow does not know it (e.g. float TIFF): OpenCV may
        # OpenCV checks its own header-size limit (OPENCV_IO_MAX_IMAGE_PIXELS, set in edge/__init__.py)
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.size == 0:
            raise NotImageData("not an image (unknown format)") from None
        check_pixels(raw.shape[1], raw.shape[0], max_pixels)
        bgr = _to_bgr8(raw)
        return Decoded(bgr, bgr.shape[1], bgr.shape[0])
    except DecodeError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise DecodeError(f"corrupt image header ({e})") from None
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    buf = np.frombuffer(data, np.uint8)
    bgr = None
    if fmt == "JPEG":
        plan = target(w, h) if target else None
        factor = reduction_factor(w, h, *plan) if plan else 1
        bgr = cv2.imdecode(buf, _REDUCED[factor])  # applies EXIF orientation itself
    elif fmt not in ("GIF",):
        raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if raw is not None:
            bgr = _orient(_to_bgr8(raw), orientation)
    if bgr is None:
        bgr = _pil_decode(data)
    if bgr.shape[0] < 1 or bgr.shape[1] < 1:
        raise DecodeError("image has no pixels")
    return Decoded(np.ascontiguousarray(bgr), w, h)


def _to_bgr8(img: np.ndarray) -> np.ndarray:
    """Any OpenCV image (gray/BGR/BGRA, 8/16-bit/float) -> 3-channel uint8 BGR."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:  # float or other integer data: 0..1 or 0..255 assumed
        f = np.nan_to_num(img.astype(np.float64), posinf=255.0, neginf=0.0)
        img = np.clip(f * 255.0 if f.max() <= 1.0 else f, 0, 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] in (1, 2):  # gray (+ alpha, ignored)
        img = img[:, :, 0]
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:  # composite on white: transparent areas are background, not black
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        return (img[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return img


def _orient(img: np.ndarray, orientation: int) -> np.ndarray:
    op, arg = _ORIENT.get(orientation, (None, None))
    if op == "flip":
        return cv2.flip(img, arg)
    if op == "rot":
        return cv2.rotate(img, arg)
    if op == "transpose":
        return cv2.transpose(img)
    if op == "transverse":
        return cv2.rotate(cv2.transpose(img), cv2.ROTATE_180)
    return img


def _pil_decode(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.seek(0)  # first frame of a GIF / first page of a multi-page file
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                rgb = Image.new("RGB", rgba.size, (255, 255, 255))
                rgb.paste(rgba, mask=rgba.getchannel("A"))
            else:
                rgb = im.convert("RGB")
            return cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR)
    except (OSError, SyntaxError, ValueError) as e:
        raise DecodeError(f"corrupt image ({e})") from None
