"""OpenVINO INT8: a role's FP32 ONNX file quantized by NNCF post-training quantization into an OpenVINO IR.

    python -m convert.int8_ov --models models --limit 300
    python -m convert.int8_ov --models models --roles hd --data ../shared/data/imagenette_train --limit 100

For each role, `models/<role>.onnx` is read by OpenVINO, quantized by
`nncf.quantize` on calibration views, and saved as `models/<role>.int8-ov.xml`
and `.bin`. The calibration views are rendered exactly as the runtime renders
them (`Engine(..., device="cpu").load(...)`'s `Prepared.pixels`, six views a
photo), from evenly spaced photos of --data (folders or tar archives; default per
role, from ../shared/data: HD on imagenette_train and openimages_train, never the
gate's voc07_val; Standard on CIFAR-10 training images, never its test split).

The IR belongs to the ONNX file it was made from: the runtime reads the
metadata (classes, thresholds, merge) from `<role>.onnx` beside it, and the
ONNX file's SHA-256 is recorded in the IR's rt_info (`sixview/onnx_sha256`);
an IR whose ONNX file has changed is refused (`edge.openvino_backend.check_ir`).
Needs the `quantize` extra (pip install '.[quantize]': nncf).
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from edge.engine import Engine
from edge.inputs import file_sha256
from edge.metadata import ROLES
from edge.openvino_backend import IR_SHA_KEY, import_openvino, ir_path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
# Each model is calibrated on what it serves: HD on real photos, Standard on CIFAR-10 training thumbnails
# (never the gate's sets: voc07_val, and CIFAR-10's test split)
DEFAULT_DATA = {"hd": (SHARED_DATA / "imagenette_train", SHARED_DATA / "openimages_train"),
                "standard": (SHARED_DATA / "cifar10-jpg.tar.gz",)}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _spaced(items: list, n: int) -> list:
    return [items[int(j * len(items) / n)] for j in range(n)] if n else []


def _from_archive(path: Path, n: int) -> list[tuple[str, bytes]]:
    """`n` evenly spaced images of a tar archive (its `train/` members when it has some: an archive
    with a test split keeps that split for gating), read in one forward pass."""
    with tarfile.open(path) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and _is_image(m.name)), key=lambda m: m.name)
        train = [m for m in members if "train" in Path(m.name).parts]
        chosen = sorted(_spaced(train or members, min(n, len(train or members))), key=lambda m: m.offset)
        return [(f"{path.name}:{m.name}", tar.extractfile(m).read()) for m in chosen]


def photos(data: list[Path], limit: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of `limit` evenly spaced photos over `data` (folders searched recursively, sorted,
    or tar archives), shared out evenly between them."""
    per: list[list[Path] | Path] = []
    for d in data:
        if d.is_file() and tarfile.is_tarfile(d):
            per.append(d)
        elif files := sorted(p for p in d.rglob("*") if _is_image(p.name)):
            per.append(files)
    if not per:
        raise SystemExit(f"error: no photos in {', '.join(map(str, data))}")
    out: list[tuple[str, bytes]] = []
    for i, src in enumerate(per):
        n = limit // len(per) + (1 if i < limit % len(per) else 0)
        if isinstance(src, Path):
            out += _from_archive(src, n)
        else:
            out += [(f.name, f.read_bytes()) for f in _spaced(src, min(n, len(src)))]
    return out


def calibration_batches(models_dir: Path, role: str, items: list[tuple[str, bytes]], log=print) -> list[np.ndarray]:
    """One float32 batch (the photo's views, NHWC 0..255) a photo (name, bytes), rendered as the runtime
    renders it."""
    engine = Engine(models_dir, routing=role, device="cpu", precision="fp32")
    batches = []
    for name, data in items:
        try:
            batches.append(np.ascontiguousarray(engine.load(data, routing=role).pixels, np.float32))
        except Exception as e:  # noqa: BLE001 (a photo that does not decode is skipped, not fatal)
            log(f"  skipped {name}: {e}")
    return batches


def quantize(onnx_path: Path, batches: list[np.ndarray], out: Path | None = None) -> Path:
    """Quantize `onnx_path` with NNCF on `batches`; write the IR (`<role>.int8-ov.xml/.bin`) with
    the ONNX file's SHA-256 in its rt_info. Returns the .xml path."""
    try:
        import nncf
    except ImportError as e:
        raise SystemExit(f"error: OpenVINO INT8 needs nncf ({e}): pip install '.[quantize]'") from None
    ov = import_openvino()
    model = ov.Core().read_model(str(onnx_path))
    q = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches),
                      preset=nncf.QuantizationPreset.PERFORMANCE)
    q.set_rt_info(file_sha256(onnx_path), IR_SHA_KEY)
    q.set_rt_info(onnx_path.name, ["sixview", "onnx_file"])
    q.set_rt_info(str(len(batches)), ["sixview", "calibration_photos"])
    xml = out or ir_path(onnx_path)
    ov.save_model(q, str(xml), compress_to_fp16=False)
    return xml


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m convert.int8_ov", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=REPO / "models", help="models folder (default: models/)")
    p.add_argument("--roles", default=",".join(ROLES), help="which models (default standard,hd)")
    p.add_argument("--data", action="append", type=Path, default=None,
                   help="a folder (or tar archive) of calibration photos (repeatable; default per role: HD "
                        "imagenette_train and openimages_train, Standard the CIFAR-10 training images of "
                        "cifar10-jpg.tar.gz). Never the gate's set.")
    p.add_argument("--limit", type=int, default=300, help="photos in all, evenly spaced (default 300)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    for role in [r.strip() for r in args.roles.split(",") if r.strip()]:
        onnx_path = args.models / f"{role}.onnx"
        t0 = time.perf_counter()
        batches = calibration_batches(args.models, role, photos(args.data or list(DEFAULT_DATA[role]), args.limit), log)
        log(f"{role}: {len(batches)} photos rendered ({time.perf_counter() - t0:.0f} s), quantizing")
        xml = quantize(onnx_path, batches)
        log(f"{role}: wrote {xml} and {xml.with_suffix('.bin').name} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
