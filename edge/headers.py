"""What an image will cost to decode, read from its header before any pixel is decoded.

`probe(data)` reads the size (and what decoding needs to know: bit depth, channels, alpha,
orientation) from the header: Pillow's for the formats it identifies, our own parsers for
PNG's and TIFF's details and for the formats only OpenCV reads (Radiance HDR, PFM, PAM).
`Header.cost(factor)` is the peak bytes decoding takes (the decoder's output, its buffers and
the conversion to 8-bit BGR: `edge/decode.py`), so an image over the decoding budget is
refused before a byte of it is allocated. Bytes in no format listed here are not decoded.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# the formats OpenCV decodes (IMREAD_UNCHANGED; JPEG at reduced size); Pillow decodes the others
OPENCV = {"JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP", "JPEG2000", "PPM", "SUN", "AVIF", "HDR", "PFM", "PAM"}
OUT = 3  # bytes per pixel of the result: 8-bit BGR
SLACK = 16 * 2**20  # the decoders' and the conversion's own buffers (rows, strips, tables)
_PIL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}  # else 4 (Pillow's storage)
_MODE_CHANNELS = {"1": 1, "L": 1, "P": 3, "I;16": 1, "I;16L": 1, "I;16B": 1, "I": 1, "F": 1, "LA": 2, "RGB": 3}


class UnknownFormat(ValueError):
    """Bytes in no format whose header gives its size."""


@dataclass(frozen=True)
class Header:
    """An image's header: format, stored size, and bytes per pixel of its decoder's output."""

    format: str
    width: int
    height: int
    depth: str  # what the decoder produces, for messages: "RGBA, 16-bit", "RGB, float"
    raw_bytes: float  # bytes per pixel of the decoder's output (OpenCV, or Pillow's image)
    buffer_bytes: int = 0  # the decoder's own buffers (a TIFF strip or tile, JPEG 2000's planes)
    orientation: int = 1  # EXIF orientation (1: upright)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def opencv(self) -> bool:
        return self.format in OPENCV

    def cost(self, factor: int = 1, pillow: bool = False) -> int:
        """Peak bytes of decoding to 8-bit BGR (JPEG: at 1/`factor` of each side; `pillow`: by Pillow)."""
        return SLACK + self._pixel_bytes(factor, pillow)

    def _pixel_bytes(self, factor: int, pillow: bool) -> int:
        turn = self.orientation != 1
        if pillow or not self.opencv:  # its image (and a turned copy), RGBA and RGB, the array, the result
            own = self.raw_bytes if not self.opencv else _PIL_BYTES.get(self.depth.split(",")[0], 4)
            return int(self.pixels * (own * (2 if turn else 1) + 4 + 4 + OUT + OUT)) + self.buffer_bytes
        # OpenCV's decoders fill a buffer of their own, then copy it into the image they return
        if self.format in ("JPEG", "MPO"):  # BGR straight from the decoder, turned upright by it
            return int(self.pixels / factor**2 * OUT * (3 if turn else 2)) + self.buffer_bytes
        # the output, converted in strips into the result (8-bit BGR is the result), and a turned copy
        result = 0 if self.raw_bytes == OUT and self.depth.endswith(", 8-bit") else OUT
        return int(self.pixels * (2 * self.raw_bytes + result + (OUT if turn else 0))) + self.buffer_bytes


def probe(data: bytes) -> Header:
    """The header of an image (size and decoding needs). Raises UnknownFormat for bytes in no
    format listed here, ValueError (or OSError, SyntaxError) for a corrupt header."""
    head = data[:64]
    if head.startswith((b"#?RADIANCE", b"#?RGBE")):
        return _hdr(data)
    if head[:2] in (b"PF", b"Pf") and head[2:3].isspace():
        w, h = _numbers(data, 2, 2)
        return Header("PFM", w, h, "RGB, float" if head[1:2] == b"F" else "grey, float", 12 if head[1:2] == b"F" else 4)
    if head.startswith(b"P7") and head[2:3].isspace():
        return _pam(data)
    if head[:2] in (b"II", b"MM") and head[2:4] in (b"*\0", b"\0*", b"+\0", b"\0+"):
        return _tiff(data)  # Pillow identifies no float or many-sample TIFF: read here for every TIFF
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h), mode = im.format or "", im.size, im.mode
            # (Pillow's getexif of a PNG decodes the whole image to look for an eXIf chunk after the pixels)
            orientation = im.getexif().get(0x0112, 1) if fmt in ("JPEG", "MPO", "WEBP", "AVIF") else 1
    except UnidentifiedImageError:
        raise UnknownFormat("not an image (unknown format)") from None
    orientation = orientation if orientation in range(1, 9) else 1
    if fmt == "PNG":
        depth, raw = _png(data)
        orientation = _png_orientation(data)
    elif fmt == "PPM":
        depth, raw = _pnm(data, mode)
    elif fmt in OPENCV:
        channels = _MODE_CHANNELS.get(mode, 4)
        raw = {"JPEG": 3, "MPO": 3, "AVIF": 8, "JPEG2000": 3 * channels}.get(fmt, 4)  # measured, rounded up
        depth = f"{mode}, 8-bit" if fmt != "JPEG2000" else mode
    else:
        depth, raw = mode, _PIL_BYTES.get(mode, 4)
    return Header(fmt, w, h, depth, raw, 0, orientation)


def _png(data: bytes) -> tuple[str, int]:
    """(depth text, bytes per pixel of OpenCV's output) from the IHDR and any tRNS chunk."""
    bits, colour = data[24], data[25]
    alpha = colour in (4, 6) or _has_chunk(data, b"tRNS")
    channels = 4 if alpha else {0: 1, 2: 3, 3: 3}.get(colour, 4)
    size = 2 if bits == 16 else 1
    name = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}.get(colour, "?")
    return f"{name}{'+transparency' if alpha and colour in (0, 2, 3) else ''}, {bits}-bit", channels * size


def _chunk(data: bytes, kind: bytes, before_pixels: bool = True) -> bytes | None:
    """The first `kind` chunk of a PNG (only before its pixels, IDAT, unless not `before_pixels`)."""
    pos = 8
    while pos + 8 <= len(data):
        length, name = struct.unpack(">I4s", data[pos:pos + 8])
        if name == kind:
            return data[pos + 8:pos + 8 + length]
        if name == b"IEND" or (name == b"IDAT" and before_pixels):
            return None
        pos += 12 + length
    return None


def _has_chunk(data: bytes, kind: bytes) -> bool:
    return _chunk(data, kind) is not None


def _png_orientation(data: bytes) -> int:
    """The EXIF orientation of a PNG's eXIf chunk (wherever it is: chunk headers are skipped, not read)."""
    exif = _chunk(data, b"eXIf", before_pixels=False)
    if not exif:
        return 1
    found = Image.Exif()
    found.load(exif if exif.startswith(b"Exif") else b"Exif\0\0" + exif)
    return found.get(0x0112, 1)


def _numbers(data: bytes, start: int, count: int) -> list[int]:
    """The first `count` integers of a PNM-style text header (comments skipped) from `start`."""
    text = re.sub(rb"#[^\n]*", b" ", data[start:start + 512])
    found = [int(x) for x in re.findall(rb"\d+", text)[:count]]
    if len(found) < count:
        raise ValueError("truncated header")
    return found


def _pnm(data: bytes, mode: str) -> tuple[str, int]:
    kind = data[1:2]
    if kind in (b"1", b"4"):
        return "1-bit", 1
    maxval = _numbers(data, 2, 3)[2]
    channels = 3 if kind in (b"3", b"6") else 1
    if mode == "F":
        return "float", 4 * channels
    size = 2 if maxval > 255 else 1
    return f"{'RGB' if channels == 3 else 'grey'}, {8 * size}-bit", channels * size


def _pam(data: bytes) -> Header:
    end = data.find(b"ENDHDR", 0, 1024)
    if end < 0:
        raise ValueError("no ENDHDR in the first 1 KB")
    fields = dict(re.findall(rb"^(WIDTH|HEIGHT|DEPTH|MAXVAL)\s+(\d+)", data[:end], re.M))
    w, h = int(fields[b"WIDTH"]), int(fields[b"HEIGHT"])
    channels, maxval = int(fields.get(b"DEPTH", 1)), int(fields.get(b"MAXVAL", 255))
    size = 2 if maxval > 255 else 1
    return Header("PAM", w, h, f"{channels} channels, {8 * size}-bit", channels * size)


def _hdr(data: bytes) -> Header:
    """Radiance RGBE: text lines up to an empty one, then the resolution line ("-Y 480 +X 640")."""
    end = data.find(b"\n\n", 0, 8192)
    if end < 0:
        raise ValueError("no end of the Radiance header in its first 8 KB")
    m = re.match(rb"\s*([-+])([XY])\s+(\d+)\s+([-+])([XY])\s+(\d+)", data[end + 2:end + 80])
    if not m or m.group(2) == m.group(5):
        raise ValueError("no resolution line in the Radiance header")
    first, second = int(m.group(3)), int(m.group(6))
    w, h = (second, first) if m.group(2) == b"Y" else (first, second)
    return Header("HDR", w, h, "RGB, float", 12)


def _tiff(data: bytes) -> Header:
    """The first page's size, samples and bits from its IFD (classic TIFF and BigTIFF)."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\0", b"\0+")
    ifd = struct.unpack(order + ("Q" if big else "I"), data[8:16] if big else data[4:8])[0]
    count_fmt, entry, head = ("Q", 20, 8) if big else ("H", 12, 2)
    n = struct.unpack(order + count_fmt, data[ifd:ifd + head])[0]
    tags: dict[int, int] = {}
    slot = 8 if big else 4
    for i in range(min(n, 512)):
        e = data[ifd + head + i * entry: ifd + head + (i + 1) * entry]
        tag, kind, count = struct.unpack(order + ("HHQ" if big else "HHI"), e[:4 + slot])
        value = e[4 + slot:]
        size = {3: "H", 4: "I", 16: "Q"}.get(kind)
        if size is None:
            continue
        if count * struct.calcsize(size) > slot:  # the values are elsewhere: read the first
            at = struct.unpack(order + ("Q" if big else "I"), value)[0]
            value = data[at:at + struct.calcsize(size)]
        tags[tag] = struct.unpack(order + size, value[:struct.calcsize(size)])[0]
    w, h = tags.get(256), tags.get(257)
    if not w or not h:
        raise ValueError("no image size in the TIFF's first directory")
    samples = tags.get(277, 1)
    bits = tags.get(258, 1)
    size = max(1, bits // 8)
    # OpenCV reads grey and RGB as they are, other kinds (palette, YCbCr, CMYK, Lab) through RGBA
    channels = samples if tags.get(262, 1) in (0, 1, 2) else max(samples, 4)
    rows = min(tags.get(323, tags.get(278, h)), h)
    buffer = rows * tags.get(322, w) * channels * size  # one strip or tile, read whole
    raw = channels * size
    kind = "float" if tags.get(339) == 3 else f"{bits}-bit"
    orientation = tags.get(274, 1) if tags.get(274, 1) in range(1, 9) else 1
    return Header("TIFF", w, h, f"{samples} samples, {kind}", raw, buffer, orientation)
