"""Read CIFAR-10's pickled batches without letting the pickle run code.

The official batches are Python 2 pickles of a dict holding a numpy uint8
array, so the unpickler allows exactly the globals numpy needs to rebuild an
array (and `_codecs.encode`, which Python 3 uses for bytes at protocol 2) and
refuses every other global.
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Any, BinaryIO

import numpy as np

from training.errors import DataError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

# (module, name) pairs a CIFAR batch may reference, mapped to the object used.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 pickles bytes at protocol 2
}


class UnsafePickleError(DataError):
    """A pickle that asks for a global outside the allowed set."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only builds builtin containers/scalars and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed global or refuse the pickle."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to unpickle: global '{module}.{name}' is not allowed "
                "(not a plain CIFAR batch)") from None


def safe_load(f: BinaryIO | bytes) -> Any:
    """Unpickle `f` (a file or bytes) with `RestrictedUnpickler`, bytes keys kept."""
    if isinstance(f, (bytes, bytearray)):
        f = io.BytesIO(f)
    try:
        return RestrictedUnpickler(f, encoding="bytes").load()
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated/corrupt pickle
        raise DataError(f"not a readable pickle: {e}") from None


def _key(d: dict, name: str) -> Any:
    for k in (name, name.encode()):
        if k in d:
            return d[k]
    raise KeyError(name)


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


def read_cifar_batch(f: BinaryIO | bytes, where: str = "batch") -> tuple[np.ndarray, list[int], list[str]]:
    """Parse one CIFAR-10 batch: (images (N,32,32,3) uint8 RGB, labels, filenames)."""
    d = safe_load(f)
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected a dict, got {type(d).__name__}")
    try:
        data = np.asarray(_key(d, "data"))
        labels = [int(v) for v in _key(d, "labels")]
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{where}: not a CIFAR-10 batch ({e})") from None
    try:
        names = [_text(v) for v in _key(d, "filenames")]
    except KeyError:
        names = [f"{i:05d}" for i in range(len(labels))]
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] % 3 or data.shape[0] != len(labels):
        raise DataError(f"{where}: 'data' must be uint8 (N, 3*H*W) matching the labels, "
                        f"got {data.dtype} {data.shape}")
    side = int(round((data.shape[1] // 3) ** 0.5))
    if side * side * 3 != data.shape[1]:
        raise DataError(f"{where}: rows of {data.shape[1]} values are not square RGB images")
    images = data.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)  # CHW planes -> HWC
    return np.ascontiguousarray(images), labels, names


def read_cifar_meta(f: BinaryIO | bytes) -> list[str]:
    """Class names from `batches.meta` (key `label_names`)."""
    d = safe_load(f)
    try:
        return [_text(v) for v in _key(d, "label_names")]
    except (KeyError, TypeError) as e:
        raise DataError(f"batches.meta: no label_names ({e})") from None
