"""What the benchmark scripts share: paths, test frames and photos, toy models, timing, output files.

Frames are built in memory (upscaled VOC photos JPEG-encoded in memory):
nothing derived from the data sets is ever written into the repository.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.atomic import atomic_write
from edge.stats import machine_info

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_MODELS = REPO / "models"
VOC_IMAGES = REPO.parent / "shared" / "data" / "voc07_val" / "images"
FRAME_SIZES = {"1080p": (1920, 1080), "4k": (3840, 2160)}
MIN_BUDGET_RUNS = 10


def scratch_dir(prefix: str) -> Path:
    """A temporary folder, removed when the process exits."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


def out_dir(arg: str | None, quick: bool) -> Path:
    """`--out`, or benchmarks/results/<machine>/ (quick runs: its git-ignored raw/quick/)."""
    if arg:
        d = Path(arg)
    else:
        d = RESULTS / str(machine_info()["name"])
        if quick:
            d = d / "raw" / "quick"
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` as indented JSON (atomically: a crash leaves the old file)."""
    atomic_write(path, json.dumps(data, indent=2, default=_jsonable) + "\n")
    return path


def write_results(out: Path, name: str, result: dict[str, Any], markdown: str) -> list[Path]:
    """A benchmark's `<name>.json` and `<name>.md` in `out`; returns their paths."""
    md = out / f"{name}.md"
    atomic_write(md, markdown)
    return [write_json(out / f"{name}.json", result), md]


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; floats get 2 decimals (3 below 10)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def machine_md(m: dict[str, Any]) -> str:
    """One Markdown paragraph naming the machine and library versions."""
    return (f"Machine `{m['name']}`: {m['cpu']}, {m['cores']} cores"
            f" ({', '.join(m['cpu_flags']) or 'no AVX flags read'}); ONNX Runtime {m['onnxruntime']},"
            + (f" OpenVINO {m['openvino']}," if m.get("openvino") else "") +
            f" numpy {m['numpy']}, OpenCV {m['opencv']}, Python {m['python']}.\n"
            "Absolute times vary with the machine and its load; compare ratios measured in the same run.\n")


def shown(path: Path | str) -> str:
    """A path relative to the repository when it is inside it (reports are committed)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def wrote(out: Path, name: str, *others: str) -> str:
    """The closing line of a run: `wrote <out>/<name>.json, <name>.md[, others]`."""
    return f"wrote {out / f'{name}.json'}, {name}.md" + "".join(f", {o}" for o in others)


def voc_photo(path: str | None = None) -> tuple[bytes | None, str]:
    """JPEG bytes of a VOC photo (`path`, or the first of voc07_val) and where it came from;
    (None, reason) when absent."""
    if path:
        p = Path(path)
    else:
        photos = sorted(VOC_IMAGES.glob("*.jpg")) if VOC_IMAGES.is_dir() else []
        if not photos:
            return None, f"{VOC_IMAGES} is absent"
        p = photos[0]
    if not p.is_file():
        return None, f"{p} is absent"
    return p.read_bytes(), str(p)


def synthetic_photo(width: int = 500, height: int = 375, seed: int = 0) -> np.ndarray:
    """A photo-like BGR image (smooth gradients, shapes, mild noise) when no photo is at hand."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([120 + 80 * np.sin(x / 37.0), 100 + 60 * np.cos(y / 23.0), 90 + 0.2 * (x + y) % 120], -1)
    for _ in range(12):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        cv2.circle(img, (cx, cy), int(rng.integers(10, height // 4)), c, -1)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode_jpeg(bgr: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a BGR image (in memory)."""
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def upscaled_frame(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """The photo's centre cropped to the frame's aspect ratio, resized (bicubic) to width x height."""
    h, w = bgr.shape[:2]
    if w * height > h * width:  # too wide: crop the sides
        cw = max(1, round(h * width / height))
        bgr = bgr[:, (w - cw) // 2:(w - cw) // 2 + cw]
    else:
        ch = max(1, round(w * height / width))
        bgr = bgr[(h - ch) // 2:(h - ch) // 2 + ch]
    return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_CUBIC)


def bench_frames(photo: str | None = None, sizes: Sequence[str] = ("voc", "1080p", "4k"),
                log=print) -> dict[str, tuple[bytes, str]]:
    """name -> (JPEG bytes, source): the VOC photo as is, and it upscaled to 1080p and 4K.
    Without the photo the VOC frame is skipped (with a message) and a synthetic photo
    stands in for the upscaled frames."""
    data, source = voc_photo(photo)
    frames: dict[str, tuple[bytes, str]] = {}
    if data is None:
        log(f"VOC photo not found ({source}): skipping the VOC frame; 1080p/4K frames come from a synthetic photo")
        base, base_src = synthetic_photo(), "synthetic"
    else:
        base = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        base_src = source
        if "voc" in sizes:
            frames["voc"] = (data, source)
    for name in sizes:
        if name in FRAME_SIZES:
            w, h = FRAME_SIZES[name]
            frames[name] = (encode_jpeg(upscaled_frame(base, w, h)), f"{base_src} upscaled to {w}x{h}")
    return frames


def write_synthetic(folder: Path, indices: Iterable[int], name: str = "synthetic_{i}.jpg",
                    size: tuple[int, int] = (500, 375)) -> None:
    """Synthetic photos (`synthetic_photo`, seed = index) as JPEG files `name.format(i=index)` in `folder`."""
    for i in indices:
        (folder / name.format(i=i)).write_bytes(encode_jpeg(synthetic_photo(*size, seed=i)))


def timed_scan(engine: Any, paths: list[str], workers: int, batch_images: int,
               errors: list[str] | None = None) -> tuple[dict[str, Any], Any]:
    """`edge.scan.scan` over `paths` (records dropped; their error messages appended to `errors`):
    images, errors, seconds and images/s, and the scan's own summary."""
    from edge.scan import scan

    keep = errors.append if errors is not None else None
    summary = scan(paths, engine, lambda rec: keep and rec["error"] and keep(rec["error"]),
                   workers=workers, batch_images=batch_images)
    rate = summary.images / summary.seconds if summary.seconds else 0.0
    return {"images": summary.images, "errors": summary.errors, "seconds": summary.seconds,
            "images_per_s": rate}, summary


def toy_models(role: str = "hd", input_size: tuple[int, int] = (64, 64), int8: bool = False) -> Path:
    """A temporary models/ folder with a colour-detector `<role>.onnx` (and a copy named
    `<role>.fp16.onnx` marked fp16, for the precision loop), for `--quick` runs."""
    from convert.toy import save_colour_model

    d = scratch_dir("sixview-bench-")
    save_colour_model(d / f"{role}.onnx", role=role, input_size=input_size)
    save_colour_model(d / f"{role}.fp16.onnx", role=role, input_size=input_size, precision="fp16")
    if int8:
        save_colour_model(d / f"{role}.int8.onnx", role=role, input_size=input_size, precision="int8")
    return d


def model_dir_for(path: Path, role: str, precision: str) -> Path:
    """A temporary folder where `path` appears under the name the Engine looks for
    (`<role>.onnx`, `<role>.int8.onnx`, ...), so any file can run through `edge.Engine`."""
    from edge.model import PRECISION_SUFFIX

    d = scratch_dir("sixview-model-")
    link = d / f"{role}{PRECISION_SUFFIX[precision]}"
    try:
        link.symlink_to(path.resolve())
    except OSError:  # no symlinks (e.g. some Windows setups): a copy does the same
        link.write_bytes(path.read_bytes())
    return d


def onnx_params(proto: Any) -> int:
    """The float parameters of an ONNX graph: the elements of its FLOAT initializers."""
    import onnx

    return sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def parse_ints(text: str) -> list[int]:
    """'1,6,24' -> [1, 6, 24]."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"expected positive integers, got {text!r}")
    return vals


def frame_input(model, frames: int = 1) -> np.ndarray:
    """`frames` six-view frames of random 0..255 pixels in a model's own input (`edge.model.Model`): six
    views a frame, or the frame itself for a one-pass graph (`ModelMeta.frame_inputs`)."""
    h, w = model.meta.input_size
    n = model.meta.frame_inputs * frames
    return np.random.default_rng(0).uniform(0, 255, (n, h, w, 3)).astype(np.float32)


def time_interleaved(fns: dict[str, Callable[[], Any]], warmup: int, runs: int,
                     budget_s: float | None = None) -> dict[str, list[float]]:
    """`time_calls` for several functions at once: warm each up, then rounds of one timed call each,
    the order rotating every round, so that load changes hit all of them alike. With a budget,
    rounds go on for `budget_s` seconds per function (at least 10 rounds)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    samples: dict[str, list[float]] = {k: [] for k in names}
    deadline = time.perf_counter() + budget_s * len(names) if budget_s else None
    rnd = 0
    while True:
        shift = rnd % len(names)
        for k in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            fns[k]()
            samples[k].append((time.perf_counter() - t0) * 1e3)
        rnd += 1
        if deadline is None:
            if rnd >= runs:
                return samples
        elif time.perf_counter() >= deadline and rnd >= MIN_BUDGET_RUNS:
            return samples


def time_calls(fn: Callable[[], Any], warmup: int, runs: int, budget_s: float | None = None) -> list[float]:
    """Call `fn` `warmup` times untimed, then time it (ms, monotonic clock): `runs` times,
    or with a budget as often as fits in `budget_s` seconds (at least 10 times)."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s if budget_s else None
    while True:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        if deadline is None:
            if len(samples) >= runs:
                return samples
        elif time.perf_counter() >= deadline and len(samples) >= MIN_BUDGET_RUNS:
            return samples
