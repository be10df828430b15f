"""``RunSetup``: give a run its folder and its MLflow record before the first step.

LightningCLI calls it (as its ``save_config_callback``) once the trainer exists. It

* saves the fully resolved recipe as ``<run dir>/config.yaml`` and logs it to MLflow (params and the
  ``recipe/`` artifact); a resumed run keeps its ``config.yaml`` and gets ``config.resume-step_N.yaml``;
* points checkpoints at ``<run dir>/checkpoints`` (so runs never overwrite each other), the MLflow
  logger's spool at ``<run dir>/mlflow-spool.jsonl``, and tags the MLflow run with the run directory;
* records the MLflow run in every checkpoint (``checkpoint["mlflow"]``) so a resume continues it;
* with several processes, gives every rank rank zero's run id, so ``run_dir()`` agrees everywhere.
"""

from __future__ import annotations

import warnings

import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback

from workbench.common import atomic_write_text
from workbench.model.checkpoint import MLFLOW_CHECKPOINT_KEY
from workbench.tracking.logger import DurableMLflowLogger
from workbench.tracking.runs import RUN_DIR_TAG, mlflow_logger, run_dir
from workbench.tracking.spool import SPOOL_FILE


class RunSetup(SaveConfigCallback):
    """The run's folder, recipe record, checkpoint folder, spool file and MLflow tags (see the module doc)."""

    def __init__(self, *args, **kwargs):
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        logger = mlflow_logger(trainer)
        if logger is not None and trainer.world_size > 1:
            # Only rank 0 talks to MLflow; the others learn the run id so run_dir() is the same everywhere.
            run_id = trainer.strategy.broadcast(logger.run_id if trainer.is_global_zero else None)
            if not trainer.is_global_zero:
                logger._run_id = run_id

    def save_config(self, trainer, pl_module, stage) -> None:
        directory = run_dir(trainer)
        directory.mkdir(parents=True, exist_ok=True)
        logger = mlflow_logger(trainer)
        path, artifact_dir = directory / "config.yaml", "recipe"
        resume_step = getattr(logger, "resume_step", None)
        if self.config.get("ckpt_path") and path.exists():
            name = f"resume-step_{resume_step:06d}" if resume_step is not None else "resume"
            path, artifact_dir = directory / f"config.{name}.yaml", f"recipe/{name}"
        with warnings.catch_warnings():  # jsonargparse >= 4.49 deprecates skip_none for skip_unset; both write Nones
            warnings.simplefilter("ignore", DeprecationWarning)
            text = self.parser.dump(self.config, skip_none=False)  # what parser.save(multifile=False) writes
        atomic_write_text(path, text, what="the run's recipe")  # a full disk: one line (DiskFull), no partial file
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = str(directory / "checkpoints")
        if trainer.is_global_zero:
            where = f"MLflow run {logger.run_id} in {_uri(logger)}, " if logger is not None else ""
            print(f"[workbench] {where}run folder {directory.resolve()}", flush=True)
        if logger is None:
            return
        if isinstance(logger, DurableMLflowLogger):
            logger.spool_path = directory.resolve() / SPOOL_FILE
        logger.log_hyperparams(yaml.safe_load(path.read_text()))
        logger.log_artifact(path, artifact_dir)
        if isinstance(logger, DurableMLflowLogger):
            logger.set_tags({RUN_DIR_TAG: str(directory.resolve())})
        else:
            logger.experiment.set_tag(logger.run_id, RUN_DIR_TAG, str(directory.resolve()))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        logger = mlflow_logger(trainer)
        if logger is not None and trainer.is_global_zero:
            checkpoint[MLFLOW_CHECKPOINT_KEY] = {"run_id": logger.run_id, "tracking_uri": _uri(logger)}

    def on_fit_end(self, trainer, pl_module) -> None:
        """Say where the run's results are, and what the data policy dropped."""
        if not trainer.is_global_zero:
            return
        data = trainer.datamodule
        skipped = getattr(data, "skipped", None)
        if skipped:
            print(f"[workbench] {len(skipped)} samples skipped (data.on_bad_sample: skip), listed with their "
                  f"reasons in {data.skipped_report_path()}", flush=True)
        last = getattr(trainer.checkpoint_callback, "last_model_path", "")
        print(f"[workbench] run folder {run_dir(trainer).resolve()}" + (f", last checkpoint {last}" if last else ""),
              flush=True)


def _uri(logger) -> str:
    return logger.tracking_uri if isinstance(logger, DurableMLflowLogger) else logger._tracking_uri
