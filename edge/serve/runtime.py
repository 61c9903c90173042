"""What the HTTP routes and the live stream share: the engine, decoding threads, the batcher,
readiness; and the one call that turns uploads into records (the pipeline's loader and matcher,
`edge/pipeline.py`, around the batcher)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..decode import Decoded
from ..engine import Engine, Verdict
from ..errors import SETUP_ERRORS
from ..pipeline import Loaded, match
from ..records import record
from .admission import ByteBudget, return_freed_memory, views_bytes
from .batcher import Batcher, BatchInfo
from .engines import Classifier
from .guard import Limits
from .lanes import DecodeLanes
from .metrics import Metrics
from .uploads import Options, Upload, load_upload

log = logging.getLogger("sixview.serve")


@dataclass(frozen=True)
class ServeSettings:
    """The server's limits and security settings (the `sixview serve` options)."""

    max_batch: int = 8  # images per model call
    max_wait_ms: float = 5.0  # how long a batch waits for requests still being decoded
    max_queue: int = 32  # requests in flight at once; the next one gets 503
    max_body: int = 16 * 2**20  # bytes of one request body (and one stream frame)
    max_images: int = 16  # images in one request
    image_memory: int = 512 * 2**20  # bytes the requests' images hold at once (decoding, views): admission.py
    decode_workers: int = 2  # decoding threads
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    retry_after_s: int = 1
    limits: Limits = Limits()  # slow clients, receiving bodies, the large images' lane


@dataclass
class Outcome:
    """One classify call: a record per image (in order) and the server's timings."""

    records: list[dict[str, Any]]
    loaded: list[Loaded]
    timings_ms: dict[str, float]
    batch_images: int


class Runtime:
    """The engine behind the server, its decoding threads and its batcher."""

    def __init__(self, engine: Engine, settings: ServeSettings, metrics: Metrics):
        self.engine, self.settings, self.metrics = engine, settings, metrics
        self.classifier = Classifier(engine, metrics)
        self.batcher = Batcher(self.classifier, settings.max_batch, settings.max_wait_ms, settings.max_queue, metrics)
        self.decoders = DecodeLanes(settings.decode_workers, settings.limits.large_pixels)  # large images: a lane
        self.budget = ByteBudget(settings.image_memory)  # the images' memory (admission.py)
        return_freed_memory()
        self.ready = threading.Event()
        self.failure: str | None = None  # why the models could not be loaded or warmed

    async def start(self) -> None:
        """Start batching, and load and warm the models in the background (`/readyz` says when done)."""
        self.batcher.start()
        self.batcher.in_model_thread(self.warm_up)

    async def stop(self) -> None:
        await self.batcher.stop()
        self.decoders.shutdown(wait=True, cancel_futures=True)

    def warm_up(self) -> None:
        """Open the models the routing can reach and run each once per tiling setting (in the model's thread)."""
        try:
            self.engine.check()
            for role in self.engine.roles():
                meta = self.engine.model(role).meta
                h, w = meta.input_size
                blank = Decoded(np.full((4 * h, 4 * w, 3), 128, np.uint8), 4 * w, 4 * h)
                items = [self.engine.prepare(blank, routing=role, tiling=t) for t in (True, False)]
                self.classifier([(items, None)])
        except SETUP_ERRORS as e:
            self.failure = str(e)
            log.error("models not ready: %s", e)
            return
        except Exception as e:  # noqa: BLE001 (reported by /readyz; the server keeps answering)
            self.failure = f"warm-up failed: {type(e).__name__}: {e}"
            log.error("%s", self.failure)
            return
        self.ready.set()
        self.metrics.ready.set(1)

    def models(self) -> list[dict[str, Any]]:
        """What `/v1/models` says about each model the routing can reach."""
        out = []
        for role in self.engine.roles():
            try:
                m = self.engine.model(role)
            except SETUP_ERRORS:
                continue
            meta = m.meta
            out.append({"role": role, "file": m.path.name, "classes": list(meta.classes),
                        "thresholds": dict(self.engine.rule(role).named_thresholds),
                        "model_thresholds": dict(meta.thresholds),
                        "fallback_min_score": meta.fallback_min_score,
                        "presence_threshold": meta.presence_threshold, "input_size": list(meta.input_size),
                        "view_fraction": meta.view_fraction, "precision": m.precision, "provider": m.provider,
                        "provenance": meta.provenance})
        return out

    async def classify(self, uploads: list[Upload], options: Options, key: str = "path",
                       values: list[Any] | None = None) -> Outcome:
        """Decode the uploads in the decoding threads, classify them with other requests' images, and
        build one record per image (`key`: "path" with the uploads' names, or "frame" with `values`).
        The images go in groups of at most `--max-batch`, one after the other, each loaded once its share
        of the image memory budget is free (`admission.py`). The caller holds a place (`batcher.admit`)."""
        t0 = time.perf_counter()
        loaded: list[Loaded] = []
        verdicts: list[Verdict | None] = []
        infos: list[BatchInfo] = []
        load_ms = 0.0
        step = self.settings.max_batch
        for start in range(0, len(uploads), step):  # one group at a time: measured faster than overlapping
            part, found, info, ms = await self._group(uploads[start:start + step], options)
            loaded += part
            verdicts += found
            infos += [info] if info.batch_images else []
            load_ms += ms
        records = []
        for i, (x, verdict) in enumerate(zip(loaded, verdicts, strict=True)):
            value = values[i] if values is not None else x.key.name
            records.append(record(key, value, verdict, timings_ms=x.timings_ms, error=x.error))
        timings = {"load": load_ms, "queue": infos[0].queue_ms if infos else 0.0,
                   "batch": sum(i.batch_ms for i in infos), "total": (time.perf_counter() - t0) * 1e3}
        return Outcome(records, loaded, {k: round(v, 3) for k, v in timings.items()},
                       max((i.batch_images for i in infos), default=0))

    async def _group(self, uploads: list[Upload], options: Options
                     ) -> tuple[list[Loaded], list[Verdict | None], BatchInfo, float]:
        """One group of a request's images: its share of the budget (decoding, then the views while
        its batch runs), its loaded images (without their pixels), their verdicts, batch and load time."""
        loop = asyncio.get_running_loop()
        renderer = self.engine.renderer
        cost = len(uploads) * views_bytes(renderer, options.tiling)
        verdicts: list[Verdict] = []
        info = BatchInfo(0.0, 0.0, 0)
        async with self.budget.hold(cost) as held:
            t0 = time.perf_counter()
            loaded = await asyncio.gather(*(loop.run_in_executor(self.decoders, load_upload, renderer, u, options)
                                            for u in uploads))
            load_ms = (time.perf_counter() - t0) * 1e3
            for u in uploads:
                u.data = b""  # decoded: the bytes are not needed any more
            held.keep(sum(x.nbytes for x in loaded))
            ready = [x.prepared for x in loaded if x.prepared is not None]
            if ready:
                verdicts, info = await self.batcher.submit(ready, options.threshold)
            del ready
            found = match(loaded, verdicts)
            loaded = [dataclasses.replace(x, prepared=None) for x in loaded]  # the views' pixels go now
        return loaded, found, info, load_ms
