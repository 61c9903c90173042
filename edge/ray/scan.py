"""`sixview scan --ray [ADDRESS]`: the same scan, records and options as `edge/scan/`, on Ray.

The driver lists the images (`edge.uris.collect_any`: local paths as `edge.inputs.collect_keyed`,
URIs through `pyarrow.fs`; `--shard` applies), cuts the listing into blocks of `--block-size` images
and feeds the missing blocks to a Ray Data pipeline:

    rows (index, path) -> decode_rows: CPU tasks, DECODE_CPUS each       (edge/ray/work.py)
                       -> Classifier: an actor pool of --actors, ACTOR_CPUS (+1 GPU on cuda/tensorrt)
                       -> driver: a block's records, once all have come, to DIR/block-*.jsonl and the
                          manifest (edge/ray/blocks.py); when every block is done, merged into --out

Ray's pitfalls, avoided on purpose: actors take a fraction of a CPU and the pool leaves at least one
CPU to the decoding tasks (actors holding every CPU starve the tasks and the run hangs); decoding asks
for other resources than the actors (equal ones are fused into the actor: no parallel decoding);
retries and restarts are bounded (RETRIES; Ray Data's default is forever), and so is a stall, a wait
for actors that cannot start included (STALL_S, not Ray's 1800 s). A pipeline that fails past its retries is run again
for the blocks still missing, RETRIES times at most.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import secrets
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from ..engine import role_metas
from ..errors import SETUP_ERRORS
from ..inputs import keep_shard
from ..metadata import ModelMeta
from ..options import setup_error
from ..scan import Summary
from ..sinks import CsvSink, lock_output
from ..uris import collect_any
from .blocks import Gather, RunFolder, merge_blocks
from .work import Classifier, ModelFiles, configure_data, decode_rows, setup_cause

ACTOR_CPUS = 0.5  # a fraction: the decoding tasks must always find a CPU
DECODE_CPUS = 1.0  # not ACTOR_CPUS: equal resources would fuse decoding into the actors
CHUNK = 128  # images per task at most: the driver spent 0.9 CPU ms an image in tasks of 16, 0.13 in tasks of 128
RETRIES = 3  # actor restarts, task retries, and runs of the pipeline over the blocks still missing
STALL_S = 600  # a pipeline with no progress (actors that cannot start included) for this long fails
_ADDRESS = re.compile(r"^(local|auto|ray://\S+|[A-Za-z0-9.\-]+:\d+)$")


def is_address(text: str) -> bool:
    """Whether `--ray`'s value is a Ray address (local, auto, ray://host:port, host:port), not a path."""
    return bool(_ADDRESS.match(text))


def _connect(address: str) -> bool:
    """Join (or start) Ray; True when this call started a local instance (to shut down at the end).
    A local Ray keeps its files out of the user's home: its temporary folder is SIXVIEW_RAY_TMP or
    <tmp>/sixview-ray-<uid>, and its auth token lives in this process's environment only."""
    import ray

    if ray.is_initialized():
        return False
    if address != "local":
        ray.init(address=address, logging_level=logging.ERROR)
        return False
    if not any(os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # else Ray writes ~/.ray/auth_token
    temp = os.environ.get("SIXVIEW_RAY_TMP") or os.path.join(tempfile.gettempdir(), f"sixview-ray-{os.getuid()}")
    # the scan reports what fails itself; the workers' own logs stay in <temp>/session_latest/logs
    ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), _temp_dir=temp,
             include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    return True


def _pool(requested: int | None, device: str, cpus: float, gpus: float, local: bool) -> tuple[int, float]:
    """(pool size, GPUs per actor) for these resources; refuses (locally: an error, on a cluster that
    may grow: a warning) a pool that would leave the decoding tasks no CPU."""
    per_gpu = 1.0 if device in ("cuda", "tensorrt") else 0.0
    if per_gpu:
        if not gpus and local:
            raise setup_error(RuntimeError(f"--device {device}: this Ray instance has no GPU"))
        if not gpus:
            click.echo(f"warning: the cluster has no GPU now: the actors wait for one ({STALL_S} s at most)",
                       err=True)
        n = requested or max(1, int(gpus))
    else:
        n = requested or max(1, min(int(cpus), int((cpus - DECODE_CPUS) / ACTOR_CPUS)))
    if n * ACTOR_CPUS + DECODE_CPUS > cpus:
        most = max(0, int((cpus - DECODE_CPUS) / ACTOR_CPUS))
        msg = (f"{n} actors x {ACTOR_CPUS} CPU leave no CPU for the decoding tasks ({cpus:g} CPUs): "
               f"the scan would hang; use --actors {most} or fewer" if most else
               f"Ray has {cpus:g} CPUs: the scan needs {ACTOR_CPUS + DECODE_CPUS:g} at least")
        if local:
            raise click.UsageError(msg)
        click.echo(f"warning: {msg} (unless the cluster grows)", err=True)
    return n, per_gpu


def _start(address: str, actors: int | None, device: str, todo: str) -> tuple[bool, int, float]:
    """Join or start Ray and size the pool: (started here, actors, GPUs per actor)."""
    import ray

    t0 = time.perf_counter()
    started = _connect(address)
    res = ray.cluster_resources()
    cpus = res.get("CPU", 0.0)
    n, per_gpu = _pool(actors, device, cpus, res.get("GPU", 0.0), address == "local")
    click.echo(f"ray: {'started locally' if started else 'joined'} in {time.perf_counter() - t0:.1f} s "
               f"({cpus:g} CPUs); {n} actors, {todo} to do", err=True)
    configure_data(STALL_S)
    return started, n, per_gpu


def _pipeline(indices: list[int], paths: list[str], metas: dict[str, ModelMeta], models: Any,
              options: dict[str, Any], batch_images: int, actors: int, per_gpu: float):
    """Batches (pyarrow: index, line) of the images at `indices`, as they are classified."""
    import pyarrow as pa
    import ray.data as rd

    table = pa.table({"index": pa.array(indices, pa.int64()),
                      "path": pa.array([os.fsencode(paths[i]) for i in indices], pa.binary())})
    decode_opts = {k: options[k] for k in ("routing", "tiling", "max_pixels")}  # a Renderer's
    # an actor answers once per input block: enough blocks for every actor, and records that stream back
    chunk = max(1, min(CHUNK, math.ceil(len(indices) / (8 * actors))))
    ds = rd.from_arrow(table, override_num_blocks=math.ceil(len(indices) / chunk))
    with warnings.catch_warnings():  # retries have no named parameter yet: Ray 2.60 warns on ray_remote_args
        warnings.filterwarnings("ignore", message=".*ray_remote_args. is deprecated")
        ds = ds.map_batches(decode_rows, batch_size=None, batch_format="pyarrow", num_cpus=DECODE_CPUS,
                            fn_kwargs={"metas": metas, "options": decode_opts}, max_retries=RETRIES)
        ds = ds.map_batches(Classifier, batch_size=batch_images, batch_format="pyarrow",
                            compute=rd.ActorPoolStrategy(size=actors), num_cpus=ACTOR_CPUS,
                            num_gpus=per_gpu or None, fn_constructor_kwargs={"models": models, "options": options},
                            max_restarts=RETRIES, max_task_retries=RETRIES)
    return ds.iter_batches(batch_size=None, batch_format="pyarrow")


def run(paths: tuple[str, ...], *, out: Path | None, csv_path: Path | None, resume: bool, overwrite: bool,
        shard: str | None, batch_images: int, address: str, actors: int | None, ray_dir: Path | None,
        block_size: int, engine_opts: dict[str, Any],
        on_records: Callable[[int, RunFolder], None] | None = None) -> int:
    """Scan `paths` on Ray; returns the exit code (0, 1: some images or blocks failed, 130:
    interrupted). Usage and setup errors raise click exceptions (exit code 2). `on_records(n, folder)`
    is called after each batch of records arrives (n: records so far)."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ModuleNotFoundError as e:
        raise click.UsageError(f"--ray needs Ray ({e.name} is missing): pip install 'sixview[ray]'") from None
    if out is not None and str(out) == "-":  # stdout, as in the local scan
        out = None
    if resume and out is None and ray_dir is None:
        raise click.UsageError("--resume needs --out FILE or --ray-dir DIR")
    listing = _listing(paths, shard)
    if not listing:
        click.echo("nothing to do: no images to scan", err=True)
        return 0
    if address == "local" and engine_opts["device"] not in ("cuda", "tensorrt") \
            and not ray.is_initialized():  # an impossible pool is refused before any output is touched
        _pool(actors, "cpu", len(os.sched_getaffinity(0)), 0.0, True)
    options, metas, files = _models(engine_opts)
    classes = list(dict.fromkeys(c for m in metas.values() for c in m.classes))
    digest = hashlib.sha256(b"".join(os.fsencode(p) + b"\n" for p in listing)).hexdigest()
    header = {"images": len(listing), "block_size": block_size, "listing_sha256": digest, "models": files.digest,
              "options": {k: v for k, v in options.items() if k != "threads"}}
    blocks = math.ceil(len(listing) / block_size)
    keep = ray_dir is not None or out is not None
    with ExitStack() as stack:
        if ray_dir is None:  # without --out either, the blocks live as long as the scan (records: stdout)
            ray_dir = Path(f"{out}.blocks") if out else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        try:
            sink = stack.enter_context(lock_output(out, append=resume, overwrite=overwrite)) if out else None
            table = stack.push(CsvSink(csv_path, classes, overwrite=overwrite or resume)).hold() if csv_path else None
            folder = stack.enter_context(RunFolder(ray_dir, header, resume=resume, overwrite=overwrite))
            if table is not None:  # every output held before any changes; --out is rewritten by the merge
                table.start()
        except SETUP_ERRORS as e:
            raise setup_error(e) from None
        before = [folder.done[b] for b in folder.done]
        try:
            summary, failure = _scan(listing, folder, blocks, block_size, metas, files, options, batch_images,
                                     address, actors, on_records)
            complete = len(folder.done) == blocks
            if complete:
                merge_blocks(folder, blocks, sink, table, str(out or "stdout"))
        except SETUP_ERRORS as e:  # a block, --out or the CSV that cannot be written
            raise setup_error(e) from None
        if before:
            click.echo(f"resumed: {sum(d['images'] for d in before)} images in {len(before)} blocks already done "
                       f"({sum(d['errors'] for d in before)} errors)", err=True)
        click.echo(summary.text(), err=True)
        if keep:
            click.echo(f"blocks: {ray_dir} ({len(folder.done)} of {blocks} done)", err=True)
        if out and complete:
            click.echo(f"results: {out}", err=True)
    return _exit_code(summary, failure, summary.errors + sum(d["errors"] for d in before), complete)


def _listing(paths: tuple[str, ...], shard: str | None) -> list[str]:
    """The images to scan (local paths and URIs, `--shard` applied), or a usage error."""
    try:
        # the driver holds the listing: ~250 bytes an image (and the Arrow rows, ~200 more)
        return list(keep_shard(collect_any(paths), shard))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise click.UsageError(str(e)) from None


def _models(engine_opts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, ModelMeta], ModelFiles]:
    """The workers' options, the metadata of the roles the scan can reach (`engine.role_metas`, read
    and checked on the driver) and the files the actors open; a setup error stops the scan."""
    opts = dict(engine_opts)
    options = {"routing": opts.pop("engine"), **{k: v for k, v in opts.items() if k != "models_dir"}}
    options["threads"] = options["threads"] or max(1, int(ACTOR_CPUS))  # one thread per actor by default
    try:
        metas = role_metas(Path(opts["models_dir"]), options["routing"], options["device"], options["precision"])
        files = ModelFiles.read(Path(opts["models_dir"]), tuple(metas), options["device"], options["precision"])
    except (*SETUP_ERRORS, OSError) as e:
        raise setup_error(e) from None
    return options, metas, files


def _exit_code(summary: Summary, failure: str | None, errors: int, complete: bool) -> int:
    """130 interrupted; 1 when the pipeline failed, images failed or blocks are missing; else 0."""
    if summary.interrupted:
        return 130
    if failure is not None:
        click.echo(f"Error: the scan stopped after {RETRIES + 1} attempts ({failure}); the finished blocks are "
                   "kept: --resume continues", err=True)
        return 1
    return 1 if errors or not complete else 0


def _scan(listing: list[str], folder: RunFolder, blocks: int, block_size: int, metas: dict[str, ModelMeta],
          files: Any, options: dict[str, Any], batch_images: int, address: str, actors: int | None,
          on_records: Callable[[int, RunFolder], None] | None) -> tuple[Summary, str | None]:
    """Run the pipeline over the missing blocks (again, RETRIES times at most, if it fails)."""
    import ray

    summary, failure, started = Summary(), None, False
    if len(folder.done) == blocks:
        return summary, None
    start = time.perf_counter()
    todo_blocks = [b for b in range(blocks) if b not in folder.done]
    missing = sum(min(block_size, len(listing) - b * block_size) for b in todo_blocks)
    bar = tqdm(total=missing, unit="img", file=sys.stderr, disable=None, dynamic_ncols=True)
    try:
        started, n, per_gpu = _start(address, actors, options["device"], f"{len(todo_blocks)} blocks of {block_size}")
        start = time.perf_counter()  # the scan's rate, as a local scan's, leaves the start of Ray out
        models = ray.put(files)
        received = 0
        for attempt in range(RETRIES + 1):
            todo = [i for b in range(blocks) if b not in folder.done
                    for i in range(b * block_size, min((b + 1) * block_size, len(listing)))]
            if not todo:
                failure = None
                break
            gather = Gather(folder, len(listing), block_size, summary)
            batches = iter(_pipeline(todo, listing, metas, models, options, batch_images, n, per_gpu))
            try:
                for batch in batches:
                    for i, line in zip(batch["index"].to_pylist(), batch["line"].to_pylist(), strict=True):
                        gather.add(i, line)
                    received += batch.num_rows
                    bar.update(batch.num_rows)
                    if on_records is not None:
                        on_records(received, folder)
                failure = None
            except (KeyboardInterrupt, click.ClickException, *SETUP_ERRORS):
                raise
            except Exception as e:  # noqa: BLE001 (a worker, node or Ray failure: run the missing blocks again)
                cause = setup_cause(e)
                if cause is not None:
                    raise setup_error(RuntimeError(cause)) from None
                failure = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                again = "; running the missing blocks again" if attempt < RETRIES else ""
                click.echo(f"warning: attempt {attempt + 1} failed ({failure}){again}", err=True)
            finally:
                getattr(batches, "close", lambda: None)()  # stops the pipeline when the loop ends early
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
        if started:
            ray.shutdown()
    return summary, failure
