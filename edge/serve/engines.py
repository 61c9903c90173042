"""The model calls of one batch: the shared Engine, and per-request thresholds as rules.

A request's own `threshold` is a decision rule (`Engine.rule(role, threshold)`: the model's
rule with one threshold for every class), never another engine: a batch is one model call per
role whatever thresholds its requests name, and each request's images are then decided by its
own rule. So a verdict with a per-request threshold is exactly what `sixview scan --threshold` gives.
"""

from __future__ import annotations

import time

from ..engine import Engine, Prepared, Verdict
from .metrics import Metrics

Job = tuple[list[Prepared], float | None]  # one request's prepared images, and its threshold (None: the engine's)


class Classifier:
    """Runs a batch of jobs: one model call per role for all of them, then each job's decisions
    by its own rule. Not thread-safe: one thread calls it."""

    def __init__(self, engine: Engine, metrics: Metrics | None = None):
        self.engine, self.metrics = engine, metrics

    def __call__(self, jobs: list[Job]) -> list[list[Verdict] | Exception]:
        """Each job's verdicts (in its images' order), or the exception the batch's call raised."""
        t0 = time.perf_counter()
        items = [p for job, _ in jobs for p in job]
        results: list[list[Verdict] | Exception] = []
        try:
            scores, infer_ms = self.engine.view_scores(items)
            start = 0
            for job, threshold in jobs:
                n, rules = len(job), {p.role: self.engine.rule(p.role, threshold) for p in job}  # once per role
                results.append([self.engine.verdict(p, s, ms, rule=rules[p.role])
                                for p, s, ms in zip(job, scores[start:start + n], infer_ms[start:start + n],
                                                    strict=True)])
                start += n
        except Exception as e:  # noqa: BLE001 (the requests of this batch answer with it; the server goes on)
            return [e for _ in jobs]
        self._observe(items)
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
