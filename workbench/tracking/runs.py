"""Where a run lives: its directory, its MLflow run, and finding a checkpoint from a run id or folder."""

from __future__ import annotations

import re
from pathlib import Path

from workbench.common import UserError
from workbench.tracking.store import store_exists

RUN_DIR_TAG = "workbench.run_dir"  # the run directory, as a tag of the MLflow run


class RunNotFound(UserError):
    """A checkpoint, run directory or run id that does not lead to a `workbench fit` checkpoint."""


def mlflow_logger(trainer):
    """The trainer's MLflow logger (Lightning's ``MLFlowLogger`` or a subclass), if it has one."""
    from lightning.pytorch.loggers import MLFlowLogger

    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            return logger
    return None


def run_dir(trainer) -> Path:
    """``<default_root_dir>/<mlflow run id>``: where a run's config, checkpoints and samples live."""
    logger = mlflow_logger(trainer)
    name = logger.run_id if logger is not None else f"version_{trainer.logger.version if trainer.logger else 0}"
    return Path(trainer.default_root_dir) / name


def find_run(run_id: str, tracking_uri: str):
    """The MLflow run ``run_id`` or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not store_exists(tracking_uri):
        return None
    try:
        return MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException:
        return None


def resolve_checkpoint(source: str, tracking_uri: str):
    """CHECKPOINT_OR_RUN (a .ckpt, a run directory or an MLflow run id) -> (checkpoint path, MLflow run or None)."""
    path = Path(source)
    if path.is_dir() and (path / "checkpoints" / "last.ckpt").is_file():
        path = path / "checkpoints" / "last.ckpt"  # a run directory
    if path.is_file():
        parent = path.resolve().parent
        run = None
        if parent.name == "checkpoints":  # <default_root_dir>/<run id>/checkpoints/x.ckpt
            run = find_run(parent.parent.name, tracking_uri)
            if run is not None and Path(run.data.tags.get(RUN_DIR_TAG, "")) != parent.parent:
                run = None  # same id in another store: not this checkpoint's run
        return path, run
    if re.fullmatch(r"[0-9a-f]{32}", source):
        if not store_exists(tracking_uri):
            raise RunNotFound(f"{source}: looks like an MLflow run id, but there is no MLflow store at "
                              f"{tracking_uri}; pass --tracking-uri")
        run = find_run(source, tracking_uri)
        if run is None:
            raise RunNotFound(f"{source}: no such MLflow run in {tracking_uri}")
        directory = run.data.tags.get(RUN_DIR_TAG)
        if not directory:
            raise RunNotFound(f"run {source} has no {RUN_DIR_TAG} tag (not a `workbench fit` run); "
                              "pass the checkpoint path instead")
        ckpt = Path(directory) / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise RunNotFound(f"run {source}: {ckpt} does not exist; pass the checkpoint path instead")
        return ckpt, run
    raise RunNotFound(f"{source}: neither a checkpoint file, a run directory nor an MLflow run id")
