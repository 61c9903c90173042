"""The error hierarchy: codes, HTTP statuses, exit codes, and the per-image policy built on them."""

from __future__ import annotations

import os

import pytest

from edge import errors
from edge.decode import DecodeError, ImageTooLarge, NotImageData, check_pixels, decode
from edge.errors import (
    SETUP_ERRORS,
    BadImage,
    FatalError,
    NotFound,
    PerInputError,
    SixviewError,
    TooLarge,
    image_error,
    is_fatal,
    per_image,
    status_of,
    try_image,
)
from edge.inputs import FileMissing, FileTooLarge, InputError, read_file
from edge.metadata import MetadataError
from edge.model import ModelError
from edge.providers import ProviderError
from edge.sinks import OutputError
from training.errors import DataError, RunError, UserError, WeightsError


def _concrete() -> list[type[SixviewError]]:
    seen, todo = [], [SixviewError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


def test_every_class_says_code_status_and_exit():
    for cls in _concrete():
        assert isinstance(cls.code, str) and cls.code and cls.code == cls.code.lower() and " " not in cls.code
        assert 400 <= cls.http_status < 600, cls
        assert cls.fatal == issubclass(cls, FatalError), cls
        assert cls.exit_code == (2 if cls.fatal else 1), cls


def test_setup_and_per_input_sides():
    for cls in (MetadataError, UserError, DataError, WeightsError, RunError):
        assert issubclass(cls, FatalError) and cls.exit_code == 2
    for cls in (DecodeError, ImageTooLarge, NotImageData, NotFound):
        assert issubclass(cls, PerInputError) and not cls.fatal
    assert MetadataError.code == "model_invalid" and issubclass(MetadataError, ValueError)  # old base kept
    assert issubclass(DecodeError, ValueError) and issubclass(DataError, UserError)
    for cls in (FatalError, ModelError, ProviderError, OutputError, MetadataError, DataError):
        assert issubclass(cls, SETUP_ERRORS) and is_fatal(cls("x"))
    assert not is_fatal(DecodeError("x")) and not is_fatal(OSError("x"))
    assert SETUP_ERRORS == (FatalError,)  # every setup error is a FatalError: no list of exceptions
    assert (ModelError.code, ProviderError.code, OutputError.code) == ("model_invalid", "provider_unavailable",
                                                                       "output_failed")
    for cls, old in ((ModelError, RuntimeError), (ProviderError, RuntimeError), (OutputError, RuntimeError),
                     (InputError, ValueError)):
        assert issubclass(cls, old)  # code that catches the old base still does
    for cls in (InputError, FileTooLarge, FileMissing):
        assert issubclass(cls, PerInputError) and not is_fatal(cls("x"))


def test_reading_a_file_says_why_in_its_class(tmp_path):
    (tmp_path / "big.jpg").write_bytes(b"\xff" * 4096)
    with pytest.raises(FileTooLarge) as big:
        read_file(str(tmp_path / "big.jpg"), max_bytes=1000)
    assert isinstance(big.value, TooLarge) and status_of(big.value) == (413, "file_too_large")
    with pytest.raises(FileMissing) as gone:
        read_file(str(tmp_path / "gone.jpg"))
    assert isinstance(gone.value, NotFound) and isinstance(gone.value, FileNotFoundError)
    assert status_of(gone.value) == (404, "not_found")
    assert image_error(gone.value) == "cannot read: No such file or directory"
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InputError) as pipe:
        read_file(str(fifo))
    assert status_of(pipe.value) == (422, "bad_input") and str(pipe.value) == "not an image file: a named pipe"


def test_decode_errors_carry_the_api_codes():
    with pytest.raises(NotImageData) as empty:
        decode(b"")
    assert status_of(empty.value) == (415, "not_an_image")
    with pytest.raises(NotImageData, match="not an image"):
        decode(b"not an image at all")
    with pytest.raises(ImageTooLarge) as big:
        check_pixels(10_000, 10_000, 1_000_000)
    assert isinstance(big.value, TooLarge) and status_of(big.value) == (413, "image_too_large")
    assert status_of(DecodeError("corrupt image (x)")) == (422, "undecodable_image")
    assert isinstance(DecodeError("x"), BadImage)


def test_status_of_anything():
    assert status_of(MetadataError("bad")) == (503, "model_invalid")
    assert status_of(FileNotFoundError("gone")) == (404, "not_found")
    assert status_of(KeyError("k")) == (500, "internal")


def test_per_image_records_input_errors_and_raises_setup_errors():
    def fails(e: BaseException) -> None:
        raise e

    assert per_image(lambda x: x + 1, 1) == (2, None)
    assert per_image(fails, NotImageData("empty file")) == (None, "empty file")
    assert per_image(fails, FileNotFoundError(2, "No such file")) == (None, "cannot read: No such file")
    assert per_image(fails, KeyError("k")) == (None, "cannot process image: KeyError: 'k'")
    for e in (MetadataError("bad meta"), ModelError("no model"), DataError("no data")):
        with pytest.raises(type(e)):
            per_image(fails, e)
    result, err = try_image(fails, ImageTooLarge("image too large: 1x1"))
    assert result is None and isinstance(err, ImageTooLarge) and image_error(err) == "image too large: 1x1"


def test_unknown_attribute_still_fails():
    with pytest.raises(AttributeError):
        errors.NO_SUCH_NAME  # noqa: B018
