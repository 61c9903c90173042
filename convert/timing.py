"""Batch latency of ONNX models on ONNX Runtime's CPU provider, for comparisons made in one run.

As everywhere in sixview (`edge.stats.summarize`): warm up, then time runs with a
monotonic clock and report mean, std and percentiles without dropping outliers.
Models compared together are timed in interleaved rounds so that load on this shared machine hits them alike.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import onnx

from edge.stats import cpu_model, summarize


def session(model: onnx.ModelProto, threads: int = 2):
    """A CPU InferenceSession with `threads` intra-op threads, opened as the runtime opens one
    (`edge.providers.create_session`: full graph optimisation, no spinning workers; spinning
    workers made ONNX Runtime look about 2x slower than the runtime on a loaded 2-core machine)."""
    from edge.providers import create_session

    return create_session(model.SerializeToString(), device="cpu", threads=threads)[0]


def _stats(ms: list[float]) -> dict[str, float]:
    return {k: round(float(v), 3) for k, v in summarize(ms).items() if k != "n"} | {"runs": len(ms)}


def compare_latency(models: Mapping[str, onnx.ModelProto], batch: int = 6, threads: int = 2,
                    runs: int = 100, warmup: int = 10, rounds: int = 5,
                    images: np.ndarray | None = None) -> dict[str, dict]:
    """Per model: batch latency stats (ms), session creation and first run (ms).

    `runs` timed runs per model, split into `rounds` interleaved rounds. Inputs are
    `images[:batch]` when given, else uniform noise in 0..255.
    """
    import onnxruntime as ort

    res: dict[str, dict] = {}
    sess, feeds, times = {}, {}, {name: [] for name in models}
    for name, model in models.items():
        t0 = time.perf_counter()
        s = session(model, threads)
        created = (time.perf_counter() - t0) * 1000
        inp = s.get_inputs()[0]
        if images is not None:
            x = np.ascontiguousarray(np.resize(images, (batch, *images.shape[1:])), np.float32)
        else:
            shape = [batch, *(d if isinstance(d, int) else 1 for d in inp.shape[1:])]
            x = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
        t0 = time.perf_counter()
        s.run(None, {inp.name: x})
        first = (time.perf_counter() - t0) * 1000
        for _ in range(warmup):
            s.run(None, {inp.name: x})
        sess[name], feeds[name] = s, {inp.name: x}
        res[name] = {"session_ms": round(created, 1), "first_run_ms": round(first, 1),
                     "size_mb": round(model.ByteSize() / 1e6, 2)}
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for name, s in sess.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                s.run(None, feeds[name])
                times[name].append((time.perf_counter() - t0) * 1000)
    env = {"provider": "CPUExecutionProvider", "threads": threads, "batch": batch,
           "ort": ort.__version__, "cpu": cpu_model()}
    for name in models:
        res[name].update(_stats(times[name]), **env)
    return res
