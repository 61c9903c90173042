"""The runtime's one error policy: what stops a run, and what is one image's (or frame's) error.

A setup error (a missing or invalid model, a provider that does not start)
stops the run before or at the first image, as one clear line. A per-image
error (an unreadable or undecodable file, an image no decoder should have
produced) goes into that image's record, and the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import cv2

from .decode import DecodeError
from .metadata import MetadataError
from .model import ModelError
from .providers import ProviderError

SETUP_ERRORS = (ModelError, MetadataError, ProviderError)
IMAGE_ERRORS = (DecodeError, OSError, cv2.error, ValueError, MemoryError)

T = TypeVar("T")


def per_image(step: Callable[..., T], *args: object, **kwargs: object) -> tuple[T | None, str | None]:
    """Run one image's step: (result, None), or (None, error text) for a per-image error.
    Setup errors (and anything unexpected) propagate."""
    try:
        return step(*args, **kwargs), None
    except SETUP_ERRORS:
        raise
    except IMAGE_ERRORS as e:
        return None, image_error(e)


def image_error(e: BaseException) -> str:
    """The `error` text of a record whose image raised `e` (one of IMAGE_ERRORS)."""
    if isinstance(e, DecodeError):
        return str(e)
    if isinstance(e, OSError):
        return f"cannot read: {e.strerror or e}"
    return f"cannot process image: {type(e).__name__}: {str(e).strip()[:200]}"
