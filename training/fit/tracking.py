"""Optional MLflow tracking: params, per-epoch metrics, run-folder artifacts.

Without mlflow installed (or with `--mlflow-uri off`) a no-op tracker is used,
so training is identical minus tracking. The default store is local, beside
the run folder: sqlite when SQLAlchemy is installed (MLflow 3's preference),
else the file store (`<parent>/mlruns`, allowed via MLFLOW_ALLOW_FILE_STORE).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXPERIMENT = "sixview"
DISABLED = ("off", "none", "false", "0")


def mlflow_available() -> bool:
    """Whether the mlflow package can be imported."""
    return importlib.util.find_spec("mlflow") is not None


def default_tracking_uri(out: Path) -> str:
    """Local store beside the run folder `out`."""
    parent = out.resolve().parent
    if importlib.util.find_spec("sqlalchemy") and importlib.util.find_spec("alembic"):
        return f"sqlite:///{parent / 'mlflow.db'}"
    return (parent / "mlruns").as_uri()


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)[:6000]
    return out


class Tracker:
    """No-op tracker (MLflow absent or disabled)."""

    run_id: str | None = None
    uri: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        """Record parameters (nested dicts are flattened with dots)."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record numeric metrics at `step`."""

    def log_artifacts(self, folder: Path, skip: tuple[str, ...] = ("last.keras",)) -> None:
        """Upload the files in `folder` except `skip`."""

    def end(self, status: str = "FINISHED") -> None:
        """Close the run with `status` (FINISHED, FAILED, KILLED)."""

    def callback(self):
        """A Keras callback logging each epoch's logs as metrics."""
        import keras

        tracker = self

        class _EpochLogger(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                tracker.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)

        return _EpochLogger()


class MlflowTracker(Tracker):
    """Tracker writing to an MLflow store through `MlflowClient` (no global state)."""

    def __init__(self, uri: str, run_name: str, artifact_root: Path | None,
                 run_id: str | None = None) -> None:
        if uri.startswith("file:") or "://" not in uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            return
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            loc = artifact_root.as_uri() if artifact_root and uri.startswith("sqlite") else None
            exp_id = self.client.create_experiment(EXPERIMENT, artifact_location=loc)
        else:
            exp_id = exp.experiment_id
        self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Record parameters (nested dicts are flattened with dots)."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in _flat(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record numeric metrics at `step`."""
        import math
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k.replace("@", "_"), float(v), ts, step or 0)
                 for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifacts(self, folder: Path, skip: tuple[str, ...] = ("last.keras",)) -> None:
        """Upload the files of `folder` (best checkpoint included; `skip` names left out)."""
        for f in sorted(Path(folder).iterdir()):
            if f.is_file() and f.name not in skip and not f.name.startswith("."):  # hidden: a write under way
                self.client.log_artifact(self.run_id, str(f))

    def end(self, status: str = "FINISHED") -> None:
        """Close the run with `status`."""
        self.client.set_terminated(self.run_id, status=status)


def open_tracker(uri: str | None, out: Path, run_name: str,
                 run_id: str | None = None) -> Tracker:
    """An MLflow tracker when mlflow is importable and not disabled, else a no-op one."""
    if (uri or "").lower() in DISABLED or not mlflow_available():
        return Tracker()
    uri = uri or default_tracking_uri(out)
    return MlflowTracker(uri, run_name, out.resolve().parent / "mlartifacts", run_id=run_id)


@contextmanager
def ending(tracker: Tracker) -> Iterator[Tracker]:
    """Close the tracker's run on leaving the block: FINISHED, KILLED on Ctrl-C, FAILED on an error."""
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end(status)
