"""Read a PyTorch state dict (`.pth`) into numpy arrays without torch and without
letting the pickle run code.

Both of torch.save's formats are read: the zip archive (torch >= 1.6: `*/data.pkl`
plus one raw file per storage) and the legacy stream (magic number, protocol,
system info, the pickled object, the storage keys, then each storage as an
int64 element count and its raw little-endian bytes). The unpickler allows only
the globals a plain state dict references: `OrderedDict`, the tensor rebuild
function and the typed storage classes; anything else is refused.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from training.errors import WeightsError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
           "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


@dataclass(frozen=True)
class _StorageType:
    dtype: Any


@dataclass
class _Storage:
    dtype: Any
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        if self.storage.data is None:
            raise WeightsError("a tensor's storage is missing from the file")
        data, size, stride = self.storage.data, self.size, self.stride
        if len(size) != len(stride) or self.offset < 0 or min((*size, *stride), default=0) < 0:
            raise WeightsError(f"a tensor has an invalid layout (size {size}, stride {stride}, offset {self.offset})")
        if 0 not in size and self.offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) >= len(data):
            raise WeightsError("a tensor reaches past the end of its storage")
        item = data.itemsize
        base = data[self.offset:]
        out = np.lib.stride_tricks.as_strided(base, self.size, [s * item for s in self.stride])
        return np.array(out)  # own the memory, contiguous


def _rebuild_tensor_v2(storage, offset, size, stride, *_rest) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise WeightsError("a tensor is rebuilt from something that is not a storage")
    return _Tensor(storage, int(offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _allowed(module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
        return _rebuild_tensor_v2
    if module == "torch" and name in _DTYPES:
        return _StorageType(np.dtype(_DTYPES[name]).newbyteorder("<"))
    raise WeightsError(f"refused to unpickle: global '{module}.{name}' is not part of a plain state dict")


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: BinaryIO, storages: dict[str, _Storage]):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        return _allowed(module, name)

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise WeightsError(f"unsupported persistent id in state dict: {str(pid)[:60]}")
        # zip: (tag, type, key, location, numel); legacy adds view metadata at the end
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if len(pid) > 5 and pid[5] is not None:
            raise WeightsError("storage views are not supported")
        if numel < 0:
            raise WeightsError(f"storage {key}: negative size {numel}")
        if not isinstance(storage_type, _StorageType):
            raise WeightsError(f"unsupported storage type {storage_type!r}")
        return self.storages.setdefault(key, _Storage(storage_type.dtype, numel))


def _materialise(obj: Any) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise WeightsError(f"expected a state dict, found {type(obj).__name__}")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    out = {}
    for k, v in obj.items():
        if isinstance(v, _Tensor):
            out[str(k)] = v.array()
    return out


def _read_legacy(f: BinaryIO) -> dict[str, np.ndarray]:
    if _Unpickler(f, {}).load() != LEGACY_MAGIC:
        raise WeightsError("not a PyTorch checkpoint (bad magic number)")
    protocol = _Unpickler(f, {}).load()
    if protocol != 1001:
        raise WeightsError(f"unsupported PyTorch legacy protocol {protocol}")
    info = _Unpickler(f, {}).load()
    if not isinstance(info, dict) or not info.get("little_endian", True):
        raise WeightsError("big-endian PyTorch checkpoints are not supported")
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(f, storages).load()
    keys = _Unpickler(f, {}).load()
    pos = f.tell()
    end, _ = f.seek(0, 2), f.seek(pos)
    for key in keys:
        st = storages[str(key)]
        count = int(np.frombuffer(f.read(8), "<i8")[0])
        nbytes = count * st.dtype.itemsize
        if count != st.numel or nbytes > end - f.tell():  # check before reading: count may be huge
            raise WeightsError(f"storage {key}: file is truncated or inconsistent")
        st.data = np.frombuffer(f.read(nbytes), st.dtype)
    return _materialise(obj)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise WeightsError(f"{path}: zip file without data.pkl (not a PyTorch checkpoint)")
        root = pkl[: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        with z.open(pkl) as f:
            obj = _Unpickler(f, storages).load()
        for key, st in storages.items():
            raw = z.read(f"{root}data/{key}")
            if len(raw) < st.numel * st.dtype.itemsize:
                raise WeightsError(f"storage {key}: record holds {len(raw)} bytes, fewer than its {st.numel} elements")
            st.data = np.frombuffer(raw, st.dtype)[: st.numel]
    return _materialise(obj)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch `.pth` state dict, by key, as numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        with path.open("rb") as f:
            return _read_legacy(f)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, IndexError, TypeError, AttributeError,
            OverflowError, zipfile.BadZipFile, zlib.error) as e:
        raise WeightsError(f"{path}: not a readable PyTorch state dict ({e})") from None
