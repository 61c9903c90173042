"""A classify request's images and options, and one image's loading (in a decoding thread)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from ..engine import ROUTINGS, Renderer
from ..errors import BadImage, SixviewError, status_of
from ..pipeline import Loaded, load_one
from .http_errors import ApiError

RAW_TYPES = ("image/", "application/octet-stream")
TRUE, FALSE = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


@dataclass(frozen=True)
class Options:
    """Per-request settings: None means the server's default."""

    routing: str | None = None
    tiling: bool | None = None
    threshold: float | None = None


@dataclass
class Upload:
    """One image of a request: its name (the record's path) and bytes."""

    name: str
    data: bytes


def error_status(loaded: Loaded) -> tuple[int, str]:
    """HTTP status and code of a failed image: its exception's class (`edge.errors.status_of`), never
    its message; an exception of no sixview class is an image that could not be processed (422)."""
    e = loaded.exception
    if isinstance(e, SixviewError):
        return status_of(e)
    return BadImage.http_status, BadImage.code


def parse_options(values: Mapping[str, str]) -> Options:
    """`engine`, `tiling`, `threshold` from query or form values (absent or empty: the server's)."""
    routing = values.get("engine") or None
    if routing is not None and routing not in ROUTINGS:
        raise ApiError(422, "invalid_option", f"engine must be one of {', '.join(ROUTINGS)}, got {routing!r}")
    tiling = None
    text = (values.get("tiling") or "").strip().lower()
    if text:
        if text not in TRUE + FALSE:
            raise ApiError(422, "invalid_option", f"tiling must be true or false, got {values['tiling']!r}")
        tiling = text in TRUE
    threshold = None
    text = (values.get("threshold") or "").strip()
    if text:
        try:
            threshold = float(text)
        except ValueError:
            threshold = -1.0
        if not 0.0 <= threshold <= 1.0:
            raise ApiError(422, "invalid_option", f"threshold must be a number in [0, 1], got {text!r}")
    return Options(routing, tiling, threshold)


class _Form(MultiPartParser):
    """starlette's multipart parser, whose image limit is an error of its own (413 `too_many_images`)."""

    def __init__(self, request: Request, max_images: int):
        super().__init__(request.headers, request.stream(), max_files=max_images + 1, max_fields=32)
        self.max_images = max_images

    def on_part_end(self) -> None:
        super().on_part_end()
        if sum(isinstance(v, UploadFile) for _, v in self.items) > self.max_images:
            raise ApiError(413, "too_many_images", f"more than {self.max_images} images in one request "
                           "(--max-images)")


async def _read_form(request: Request, max_images: int) -> FormData:
    """The request's form, with at most `max_images` files (a malformed form: 400, as starlette answers)."""
    try:
        return await _Form(request, max_images).parse()
    except MultiPartException as e:
        raise HTTPException(400, detail=e.message) from None


async def read_request(request: Request, max_images: int) -> tuple[list[Upload], Options]:
    """The images (multipart `image` fields, or a raw image body) and options (query, then form fields)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    values = dict(request.query_params)
    uploads: list[Upload] = []
    if ctype == "multipart/form-data":
        form = await _read_form(request, max_images)
        try:
            for key in ("engine", "tiling", "threshold"):
                v = form.get(key)
                if isinstance(v, str) and key not in values:
                    values[key] = v
            for part in form.getlist("image"):
                if isinstance(part, UploadFile):
                    uploads.append(Upload(part.filename or "upload", await part.read()))
                else:  # a text field named image: not an image, answered like any other
                    uploads.append(Upload("upload", part.encode()))
        finally:
            await form.close()
        if not uploads:
            raise ApiError(422, "missing_image", "no 'image' field in the form (multipart/form-data, "
                           "one or more files named 'image')")
    elif ctype.startswith(RAW_TYPES):
        uploads.append(Upload(request.query_params.get("name") or "upload", await request.body()))
    else:
        raise ApiError(415, "unsupported_media_type",
                       f"send multipart/form-data with 'image' files, or a raw image/* body (got {ctype or 'none'!r})")
    return uploads, parse_options(values)


def load_upload(renderer: Renderer, upload: Upload, options: Options) -> Loaded[Upload]:
    """Decode and render one image with the request's routing and tiling (runs in a decoding thread)."""
    return load_one(upload, _data, renderer, routing=options.routing, tiling=options.tiling)


def _data(upload: Upload) -> bytes:
    return upload.data
