"""Image decoding: bytes -> 8-bit BGR, whatever the file holds.

OpenCV decodes (fast, and for JPEG it can decode at 1/2, 1/4 or 1/8 size when
the views are much larger than the model input); Pillow handles what OpenCV
cannot. Grayscale, alpha, 16-bit, palette, multi-page and EXIF-rotated files
all come out as upright 3-channel uint8 BGR.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps

from . import MAX_PIXELS
from .errors import BadImage, NotAnImage, TooLarge
from .headers import SLACK, Header, UnknownFormat, probe

# Decoding problems are reported in each record; OpenCV's own log lines would flood a scan.
# (cv2.utils.logging is in the bindings from 4.13; cv2.setLogLevel(0), silent, in older ones and JetPack's.)
if hasattr(cv2.utils, "logging"):
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
else:
    cv2.setLogLevel(0)
BYTES_PER_PIXEL = 6  # the decoding budget, per pixel of --max-pixels: an 8-bit colour image (`decode_budget`)
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


def decode_budget(max_pixels: int) -> int:
    """The most bytes one image may take to decode: an 8-bit colour image of `max_pixels` (its
    decoder's buffer and the result: 6 bytes per pixel) and the decoders' own buffers (`SLACK`)."""
    return BYTES_PER_PIXEL * max_pixels + SLACK


def check_cost(header: Header, max_pixels: int, factor: int = 1, pillow: bool = False) -> int:
    """Refuse an image over `max_pixels`, or whose decoding would take more than `decode_budget`
    (from its header, before any of its pixels are decoded); its cost in bytes otherwise."""
    check_pixels(header.width, header.height, max_pixels)
    cost, budget = header.cost(factor, pillow), decode_budget(max_pixels)
    if cost > budget:
        raise ImageTooLarge(f"image too large to decode: {header.width}x{header.height} {header.format} "
                            f"({header.depth}) needs {cost / 2**20:,.0f} MiB, over the decoding budget of "
                            f"{budget / 2**20:,.0f} MiB ({BYTES_PER_PIXEL} bytes per pixel of --max-pixels)")
    return cost


def header_of(data: bytes) -> Header:
    """The image's header (`edge/headers.py`), or the image's error: no image, or a corrupt header."""
    if not data:
        raise NotImageData("empty file")
    try:
        return probe(data)
    except UnknownFormat as e:
        raise NotImageData(str(e)) from None
    except (OSError, SyntaxError, ValueError, IndexError, KeyError, struct.error) as e:
        raise DecodeError(f"corrupt image header ({e})") from None


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


def plan(data: bytes, target: Target | None = None, max_pixels: int = MAX_PIXELS) -> tuple[Header, int, int]:
    """What decoding `data` takes, from its header alone: (header, JPEG reduction factor, peak bytes).
    Raises the image's error: no image, a corrupt header, over `max_pixels` or over `decode_budget`."""
    header = header_of(data)
    check_pixels(header.width, header.height, max_pixels)
    w, h = _upright(header)
    jpeg = header.format in ("JPEG", "MPO")
    aim = target(w, h) if target and jpeg else None
    factor = reduction_factor(w, h, *aim) if aim else 1
    return header, factor, check_cost(header, max_pixels, factor)


def _upright(header: Header) -> tuple[int, int]:
    turned = header.orientation in (5, 6, 7, 8)
    return (header.height, header.width) if turned else (header.width, header.height)


def decode(data: bytes, target: Target | None = None, max_pixels: int = MAX_PIXELS) -> Decoded:
    """Decode image bytes. `target(width, height)` may return the (view fraction,
    model input size) the image is for: JPEGs are then decoded at reduced size.
    An image whose header declares more than `max_pixels`, or whose decoding would take more
    than `decode_budget(max_pixels)` bytes, is refused undecoded (`plan`)."""
    header, factor, _ = plan(data, target, max_pixels)
    bgr = _opencv_decode(data, header, factor) if header.opencv else None
    if bgr is None:  # a format OpenCV does not read, or a file it could not decode: Pillow, under the budget
        if header.format in ("HDR", "PFM", "PAM"):
            raise DecodeError(f"corrupt {header.format} image")
        check_cost(header, max_pixels, pillow=True)
        bgr = _pil_decode(data)
    if bgr.shape[0] < 1 or bgr.shape[1] < 1:
        raise DecodeError("image has no pixels")
    return Decoded(np.ascontiguousarray(bgr), *_upright(header))


def _opencv_decode(data: bytes, header: Header, factor: int) -> np.ndarray | None:
    """OpenCV's decoding (None: it could not): a JPEG at 1/`factor` size, upright; anything else as
    stored, converted to 8-bit BGR in strips and turned upright."""
    buf = np.frombuffer(data, np.uint8)
    try:
        if header.format in ("JPEG", "MPO"):
            return cv2.imdecode(buf, _REDUCED[factor])  # applies EXIF orientation itself
        raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error:  # its message names the library's build paths: not for a record
        return None
    if raw is None or raw.size == 0:
        return None
    bgr = _to_bgr8(raw)
    del raw
    if header.orientation == 1 or _opencv_orients(header.format):  # never twice (OpenCV's TIFF decoder orients)
        return bgr
    return _orient(bgr, header.orientation)


@functools.cache
def _opencv_orients(fmt: str) -> bool:
    """Whether OpenCV's decoder of `fmt` applies EXIF orientation itself even with IMREAD_UNCHANGED
    (TIFF's does, PNG's and WebP's do not): learnt once, from an 8x4 picture saved with orientation 6."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    try:
        Image.new("RGB", (8, 4)).save(buf, fmt, exif=exif)
    except (OSError, KeyError, ValueError):  # Pillow cannot write it: assume OpenCV leaves it as stored
        return False
    raw = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED)
    return raw is not None and raw.shape[:2] == (8, 4)


STRIP_BYTES = 4 * 2**20  # the conversion to 8-bit works on strips of about this many bytes of the decoder's output


def _to_bgr8(img: np.ndarray) -> np.ndarray:
    """Any OpenCV image (gray/BGR/BGRA, 8/16-bit/float) -> 3-channel uint8 BGR, a strip at a time
    (the result and one strip's temporaries: never a float64 copy of the whole image)."""
    if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3:
        return img
    if img.dtype == np.uint8 and img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    scale = None
    rows = max(1, STRIP_BYTES // max(1, img[:1].nbytes))
    if img.dtype not in (np.uint8, np.uint16):  # float or other integer data: 0..1 or 0..255 assumed
        peak = max((_finite(img[y:y + rows]).max() for y in range(0, img.shape[0], rows)), default=0.0)
        scale = 255.0 if peak <= 1.0 else 1.0
    out = np.empty((*img.shape[:2], 3), np.uint8)
    for y in range(0, img.shape[0], rows):
        out[y:y + rows] = _strip_to_bgr8(img[y:y + rows], scale)
    return out


def _finite(img: np.ndarray) -> np.ndarray:
    return np.nan_to_num(img.astype(np.float64), posinf=255.0, neginf=0.0)


def _strip_to_bgr8(img: np.ndarray, scale: float | None) -> np.ndarray:
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(_finite(img) * scale, 0, 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] in (1, 2):  # gray (+ alpha, ignored)
        img = img[:, :, 0]
    if img.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:  # composite on white: transparent areas are background, not black
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        return (img[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return img[:, :, :3]


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
