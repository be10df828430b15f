"""MLflow setup: the default store, the Lightning logger, artifact helpers."""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.loggers import MLFlowLogger

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The store to use: an explicit URI, else $MLFLOW_TRACKING_URI, else ./mlflow.db (sqlite)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class MLflowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger, defaulting to the local sqlite store instead of ./mlruns files."""

    def __init__(self, experiment_name: str = "workbench", run_name: str | None = None,
                 tracking_uri: str | None = None, tags: dict | None = None, run_id: str | None = None,
                 artifact_location: str | None = None):
        super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=resolve_tracking_uri(tracking_uri),
                         tags=tags, run_id=run_id, artifact_location=artifact_location)

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload one local file or folder to this run's artifacts."""
        path = Path(path)
        if path.is_dir():
            self.experiment.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.experiment.log_artifact(self.run_id, str(path), artifact_path)


def mlflow_logger(trainer) -> MLFlowLogger | None:
    """The trainer's MLflow logger, if it has one."""
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            return logger
    return None


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on ``uri``."""
    return f"mlflow ui --backend-store-uri {uri}"
