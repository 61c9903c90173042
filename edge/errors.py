"""The runtime's one error policy: what stops a run, and what is one image's (or frame's) error.

A setup error (a missing or invalid model, a provider that does not start, an
output that cannot be written) stops the run, as one clear line (exit code 2).
Anything else that goes wrong with one image or frame (an unreadable or
undecodable file, one too large, an image no decoder should have produced)
goes into that image's record, and the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .decode import DecodeError
from .inputs import InputError
from .metadata import MetadataError
from .model import ModelError
from .providers import ProviderError
from .sinks import OutputError

SETUP_ERRORS = (ModelError, MetadataError, ProviderError, OutputError)

T = TypeVar("T")


def per_image(step: Callable[..., T], *args: object, **kwargs: object) -> tuple[T | None, str | None]:
    """Run one image's step: (result, None), or (None, error text) when it fails.
    Setup errors propagate (and so do Ctrl-C and exits)."""
    try:
        return step(*args, **kwargs), None
    except SETUP_ERRORS:
        raise
    except Exception as e:  # noqa: BLE001 (whatever one image does, it is that image's error)
        return None, image_error(e)


def image_error(e: BaseException) -> str:
    """The `error` text of a record whose image raised `e`."""
    if isinstance(e, DecodeError | InputError):
        return str(e)
    if isinstance(e, OSError):
        return f"cannot read: {e.strerror or e}"
    return f"cannot process image: {type(e).__name__}: {str(e).strip()[:200]}"
