"""The runtime's one error policy: what stops a run, and what is one image's (or frame's) error.

Every error sixview raises on purpose is a `SixviewError`, whose class says what it means:
`code` (a short stable string, the HTTP API's error code), `http_status` (the answer the
server gives), `exit_code` and `fatal`.

- `FatalError` (a missing or invalid model, a provider that does not start, an output that
  cannot be written, bad user input to a command) stops the run, as one clear line (exit code 2).
- `PerInputError` (an unreadable or undecodable file, one too large, an image no decoder should
  have produced) goes into that image's record, and the run goes on (exit code 1 at the end).

This module imports no other part of `edge`, so every module may define its errors on these bases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class SixviewError(Exception):
    """Base of sixview's errors: `code`, `http_status`, `exit_code` and `fatal` say what it means."""

    code: str = "error"
    http_status: int = 500
    exit_code: int = 1
    fatal: bool = False


class FatalError(SixviewError):
    """A setup error: it stops the run with one line and exit code 2 (a server cannot answer: 503)."""

    code = "unavailable"
    http_status = 503
    exit_code = 2
    fatal = True


class ModelInvalid(FatalError):
    """A model file that is missing, unreadable or not a sixview model."""

    code = "model_invalid"


class OutputFailed(FatalError):
    """An output (records, a report, a model file) that cannot be opened, locked or written."""

    code = "output_failed"
    http_status = 500


class PerInputError(SixviewError):
    """One input's error: it becomes that image's (or frame's) record `error`; the run goes on."""

    code = "bad_input"
    http_status = 422


class BadImage(PerInputError):
    """An image that cannot be decoded (corrupt, truncated, no pixels)."""

    code = "undecodable_image"


class NotAnImage(BadImage):
    """Bytes that are no image at all: empty, or in no format a decoder knows."""

    code = "not_an_image"
    http_status = 415


class TooLarge(PerInputError):
    """An input over a size limit (bytes or pixels), refused before it is read or decoded."""

    code = "too_large"
    http_status = 413


class NotFound(PerInputError):
    """An input that does not exist."""

    code = "not_found"
    http_status = 404


SETUP_ERRORS: tuple[type[BaseException], ...] = (FatalError,)  # what `except` clauses that stop a run catch


def is_fatal(e: BaseException) -> bool:
    """Whether `e` stops the run (a setup error) rather than being one input's error."""
    return isinstance(e, SETUP_ERRORS)


def status_of(e: BaseException) -> tuple[int, str]:
    """(HTTP status, error code) for `e`: its class's, or 500 "internal" for anything unforeseen."""
    if isinstance(e, SixviewError):
        return type(e).http_status, type(e).code
    if isinstance(e, FileNotFoundError):
        return NotFound.http_status, NotFound.code
    return 500, "internal"


def try_image(step: Callable[..., T], *args: object, **kwargs: object) -> tuple[T | None, BaseException | None]:
    """Run one image's step: (result, None), or (None, the exception) when it fails.
    Setup errors propagate (and so do Ctrl-C and exits)."""
    try:
        return step(*args, **kwargs), None
    except Exception as e:  # noqa: BLE001 (whatever one image does, it is that image's error)
        if is_fatal(e):
            raise
        return None, e


def per_image(step: Callable[..., T], *args: object, **kwargs: object) -> tuple[T | None, str | None]:
    """Run one image's step: (result, None), or (None, error text) when it fails.
    Setup errors propagate (and so do Ctrl-C and exits)."""
    result, error = try_image(step, *args, **kwargs)
    return result, None if error is None else image_error(error)


def image_error(e: BaseException) -> str:
    """The `error` text of a record whose image raised `e`."""
    if isinstance(e, PerInputError):
        return str(e)
    if isinstance(e, OSError):
        return f"cannot read: {e.strerror or e}"
    return f"cannot process image: {type(e).__name__}: {str(e).strip()[:200]}"
