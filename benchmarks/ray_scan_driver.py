"""`sixview scan --ray` timed from its driver: one run's wall time, steady rate and driver CPU, and the
driver alone, with workers that do nothing."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any


def cpu_s() -> float:
    """This process's CPU time so far (every thread: Ray's core worker and Ray Data's executor too)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def ray_round(paths: list[str], engine_opts: dict[str, Any], batch: int, actors: int | None, block_size: int,
              scratch: Path, images: int | None = None) -> dict[str, Any]:
    """One `--ray` scan into a scratch folder; wall, steady rate and driver CPU."""
    from edge.ray import scan as ray_scan

    stamps: list[tuple[float, int]] = []
    c0, t0 = cpu_s(), time.perf_counter()
    code = ray_scan.run(tuple(paths), out=scratch / "ray.jsonl", csv_path=None, resume=False, overwrite=True,
                        shard=None, batch_images=batch, address="local", actors=actors, ray_dir=scratch / "blocks",
                        block_size=block_size, engine_opts=engine_opts,
                        on_records=lambda n, folder: stamps.append((time.perf_counter(), cpu_s(), n)))
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    n = images or len(paths)
    (t_first, c_first, n_first), (t_last, c_last, n_last) = stamps[0], stamps[-1]
    steady = (n_last - n_first) / (t_last - t_first) if t_last > t_first else n / wall
    # the driver's CPU while records flow (not its one-off start: planning, imports, actors starting)
    driver = (c_last - c_first) / (n_last - n_first) if n_last > n_first else cpu / n
    return {"exit_code": code, "images": n, "seconds": wall, "images_per_s": n / wall, "steady_images_per_s": steady,
            "first_record_s": t_first - t0, "driver_cpu_s": cpu, "driver_cpu_ms_per_image": driver * 1e3}


def fake_decode(batch: Any, metas: Any, options: Any) -> Any:
    """`decode_rows` without reading or decoding: what the driver sees, at no cost on the workers."""
    import pyarrow as pa

    return pa.table({"index": batch["index"], "path": batch["path"],
                     "item": pa.array([b"x"] * batch.num_rows, pa.large_binary())})


def sample_line() -> bytes:
    """A record line the size of a real one (an HD verdict over CIFAR-10's ten classes)."""
    from edge.records import FIELDS
    from edge.sinks import json_line

    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    values = {"path": "/data/photos/2026/11/29/camera-07/img_000123456.jpg", "width": 500, "height": 375,
              "engine": "hd", "provider": "cpu", "precision": "fp32", "tiling": True, "labels": ["dog"],
              "guess": None, "presence": 0.912345, "scores": {c: 0.123456 for c in classes},
              "views": {c: "bottom_right" for c in classes}, "thresholds": {c: 0.3 for c in classes},
              "timings_ms": {"decode": 2.1, "preprocess": 1.0, "infer": 11.8, "postprocess": 0.1, "total": 15.0},
              "error": None}
    return json_line({k: values[k] for k in FIELDS})


class FakeClassifier:
    """`Classifier` without a model: each row becomes a record line of the usual size."""

    def __init__(self, models: Any, options: dict[str, Any]):
        self.line = sample_line()

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        return pa.table({"index": batch["index"], "line": pa.array([self.line] * batch.num_rows, pa.large_binary())})


def driver_ceiling(images: int, engine_opts: dict[str, Any], block_size: int, scratch: Path) -> dict[str, Any]:
    """The real driver (`edge.ray.scan.run`: listing, Ray Data, records, blocks, merge) over `images`
    empty files, with workers that do nothing: its CPU per image when nothing else limits it."""
    from edge.ray import scan as ray_scan

    folder = scratch / "empty"
    folder.mkdir(exist_ok=True)
    for i in range(images):
        (folder / f"{i:08d}.jpg").touch()
    saved = ray_scan.decode_rows, ray_scan.Classifier
    ray_scan.decode_rows, ray_scan.Classifier = fake_decode, FakeClassifier
    try:
        return ray_round([str(folder)], engine_opts, 8, None, block_size, scratch, images)
    finally:
        ray_scan.decode_rows, ray_scan.Classifier = saved
