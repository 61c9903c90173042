"""OpenVINO INT8: a role's FP32 ONNX file quantized by NNCF post-training quantization into an OpenVINO IR.

    python -m convert.int8_ov --models models --limit 300
    python -m convert.int8_ov --models models --roles hd --data ../shared/data/imagenette_train --limit 100

For each role, `models/<role>.onnx` is read by OpenVINO, quantized by
`nncf.quantize` on calibration views, and saved as `models/<role>.int8-ov.xml`
and `.bin`. The calibration views are rendered exactly as the runtime renders
them (`Engine(..., device="cpu").load(...)`'s `Prepared.pixels`, six views a
photo), from evenly spaced photos of --data (default: imagenette_train and
openimages_train from ../shared/data; never the gate's set, voc07_val).

The IR belongs to the ONNX file it was made from: the runtime reads the
metadata (classes, thresholds, merge) from `<role>.onnx` beside it, and the
ONNX file's SHA-256 is recorded in the IR's rt_info (`sixview/onnx_sha256`);
an IR whose ONNX file has changed is refused (`edge.openvino_backend.check_ir`).
Needs the `quantize` extra (pip install '.[quantize]': nncf).
"""

from __future__ import annotations

import argparse
import sys
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
DEFAULT_DATA = (SHARED_DATA / "imagenette_train", SHARED_DATA / "openimages_train")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def photos(data: list[Path], limit: int) -> list[Path]:
    """`limit` evenly spaced photos over the folders in `data` (each searched recursively, sorted),
    shared out evenly between the folders."""
    per = [sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) for d in data]
    per = [p for p in per if p]
    if not per:
        raise SystemExit(f"error: no photos in {', '.join(map(str, data))}")
    out: list[Path] = []
    for i, files in enumerate(per):
        n = limit // len(per) + (1 if i < limit % len(per) else 0)
        n = min(n, len(files))
        out += [files[int(j * len(files) / n)] for j in range(n)] if n else []
    return out


def calibration_batches(models_dir: Path, role: str, files: list[Path], log=print) -> list[np.ndarray]:
    """One float32 batch (the photo's views, NHWC 0..255) a photo, rendered as the runtime renders it."""
    engine = Engine(models_dir, routing=role, device="cpu", precision="fp32")
    batches = []
    for f in files:
        try:
            batches.append(np.ascontiguousarray(engine.load(f.read_bytes(), routing=role).pixels, np.float32))
        except Exception as e:  # noqa: BLE001 (a photo that does not decode is skipped, not fatal)
            log(f"  skipped {f.name}: {e}")
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
                   help="a folder of calibration photos (repeatable; default imagenette_train and "
                        "openimages_train). Never the gate's set.")
    p.add_argument("--limit", type=int, default=300, help="photos in all, evenly spaced (default 300)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    files = photos(args.data or list(DEFAULT_DATA), args.limit)
    for role in [r.strip() for r in args.roles.split(",") if r.strip()]:
        onnx_path = args.models / f"{role}.onnx"
        t0 = time.perf_counter()
        batches = calibration_batches(args.models, role, files, log)
        log(f"{role}: {len(batches)} photos rendered ({time.perf_counter() - t0:.0f} s), quantizing")
        xml = quantize(onnx_path, batches)
        log(f"{role}: wrote {xml} and {xml.with_suffix('.bin').name} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
