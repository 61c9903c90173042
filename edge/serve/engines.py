"""The model calls of one batch: the shared Engine, and per-request thresholds.

The Engine has one threshold. A request's own `threshold` is decided by an Engine
made for that value (`ThresholdEngine`): same settings, its own batch buffer and
threshold cache, and the shared engine's models (opened once; an ONNX Runtime
session may be run from any thread, and here only the batcher's thread runs them).
So a verdict with a per-request threshold is exactly what `sixview scan --threshold`
gives. At most `max_engines` such values are kept (least recently used goes).
"""

from __future__ import annotations

import time
from collections import OrderedDict

from ..engine import Engine, Prepared, Verdict
from ..model import Model
from .metrics import Metrics

Job = tuple[list[Prepared], float | None]  # one request's prepared images, and its threshold (None: the engine's)


class ThresholdEngine(Engine):
    """An Engine with its own `threshold` that runs the models of `base`."""

    def __init__(self, base: Engine, threshold: float):
        super().__init__(base.models_dir, routing=base.routing, device=base.device, precision=base.precision,
                         threads=base.threads, tiling=base.tiling, threshold=threshold,
                         max_pixels=base.max_pixels, guess_in_labels=base.guess_in_labels)
        self.base = base

    def model(self, role: str) -> Model:
        return self.base.model(role)


class Classifier:
    """Runs a batch of jobs: one `Engine.classify` call per distinct threshold (so one model call
    per role when no request names its own). Not thread-safe: one thread calls it."""

    def __init__(self, engine: Engine, metrics: Metrics | None = None, max_engines: int = 8):
        self.engine, self.metrics, self.max_engines = engine, metrics, max_engines
        self._engines: OrderedDict[float, Engine] = OrderedDict()

    def engine_for(self, threshold: float | None) -> Engine:
        """The shared engine, or the one for a request's threshold (made once, kept while recently used)."""
        if threshold is None or threshold == self.engine.threshold:
            return self.engine
        if threshold in self._engines:
            self._engines.move_to_end(threshold)
        else:
            self._engines[threshold] = ThresholdEngine(self.engine, threshold)
            while len(self._engines) > self.max_engines:
                self._engines.popitem(last=False)
        return self._engines[threshold]

    def __call__(self, jobs: list[Job]) -> list[list[Verdict] | Exception]:
        """Each job's verdicts (in its images' order), or the exception its group's call raised."""
        t0 = time.perf_counter()
        groups: dict[float | None, list[int]] = {}
        for j, (_, threshold) in enumerate(jobs):
            groups.setdefault(threshold, []).append(j)
        results: list[list[Verdict] | Exception] = [[] for _ in jobs]
        for threshold, members in groups.items():
            items = [p for j in members for p in jobs[j][0]]
            try:
                verdicts = self.engine_for(threshold).classify(items)
            except Exception as e:  # noqa: BLE001 (the requests of this call answer with it; the server goes on)
                for j in members:
                    results[j] = e
                continue
            self._observe(items)
            start = 0
            for j in members:
                n = len(jobs[j][0])
                results[j] = verdicts[start:start + n]
                start += n
        if self.metrics is not None:
            self.metrics.model_seconds.observe(time.perf_counter() - t0)
        return results

    def _observe(self, items: list[Prepared]) -> None:
        if self.metrics is None:
            return
        roles: dict[str, int] = {}
        for p in items:
            roles[p.role] = roles.get(p.role, 0) + 1
        for role, n in roles.items():
            self.metrics.batch_images.labels(engine=role).observe(n)
            self.metrics.images.labels(engine=role).inc(n)
