"""Callbacks: the run directory and recipe logging, sample videos, step performance."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

from workbench.lit.reliability import MLFLOW_CHECKPOINT_KEY
from workbench.tracking import MLflowLogger, mlflow_logger
from workbench.tracking_spool import SPOOL_FILE

RUN_DIR_TAG = "workbench.run_dir"


def run_dir(trainer: L.Trainer) -> Path:
    """``<default_root_dir>/<mlflow run id>``: where a run's config, checkpoints and samples live."""
    logger = mlflow_logger(trainer)
    name = logger.run_id if logger is not None else f"version_{trainer.logger.version if trainer.logger else 0}"
    return Path(trainer.default_root_dir) / name


class LogRecipe(SaveConfigCallback):
    """Save the fully resolved recipe in the run directory and log it to MLflow (params + artifact).

    Also points checkpoints at ``<run dir>/checkpoints`` so runs never overwrite each other, the MLflow
    logger's spool at ``<run dir>/mlflow-spool.jsonl``, and records the MLflow run in every checkpoint
    (``checkpoint["mlflow"]``) so a resume continues it. A resumed run keeps its ``config.yaml``; the
    resuming command's recipe is saved next to it as ``config.resume-step_N.yaml`` (and logged under
    ``recipe/resume-step_N/``).
    """

    def __init__(self, *args, **kwargs):
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def setup(self, trainer, pl_module, stage) -> None:
        super().setup(trainer, pl_module, stage)
        logger = mlflow_logger(trainer)
        if logger is not None and trainer.world_size > 1:
            # Only rank zero talks to MLflow; the others learn its run id so run_dir() agrees everywhere.
            logger._run_id = trainer.strategy.broadcast(logger.run_id if trainer.is_global_zero else None)

    def save_config(self, trainer, pl_module, stage) -> None:
        directory = run_dir(trainer)
        directory.mkdir(parents=True, exist_ok=True)
        logger = mlflow_logger(trainer)
        path, artifact_dir = directory / "config.yaml", "recipe"
        resume_step = getattr(logger, "resume_step", None)
        if self.config.get("ckpt_path") and path.exists():
            name = f"resume-step_{resume_step:06d}" if resume_step is not None else "resume"
            path, artifact_dir = directory / f"config.{name}.yaml", f"recipe/{name}"
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=False)
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = str(directory / "checkpoints")
        if logger is not None:
            if isinstance(logger, MLflowLogger):
                logger.spool_path = directory.resolve() / SPOOL_FILE
            config = yaml.safe_load(path.read_text())
            logger.log_hyperparams(config)
            logger.log_artifact(path, artifact_dir)
            tags = {RUN_DIR_TAG: str(directory.resolve())}
            if isinstance(logger, MLflowLogger):
                logger.set_tags(tags)
            else:
                logger.experiment.set_tag(logger.run_id, RUN_DIR_TAG, tags[RUN_DIR_TAG])

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        logger = mlflow_logger(trainer)
        if logger is not None and trainer.world_size > 1:
            # Only rank 0 talks to MLflow; the others learn the run id so run_dir() is the same everywhere.
            run_id = trainer.strategy.broadcast(logger.run_id if trainer.is_global_zero else None)
            if not trainer.is_global_zero:
                logger._run_id = run_id

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        logger = mlflow_logger(trainer)
        if logger is not None and trainer.is_global_zero:
            checkpoint[MLFLOW_CHECKPOINT_KEY] = {"run_id": logger.run_id, "tracking_uri": logger.tracking_uri
                                                 if isinstance(logger, MLflowLogger) else logger._tracking_uri}


class SampleVideos(L.Callback):
    """Generate videos for fixed prompts at validation and log them as mp4 artifacts.

    With several processes each renders its share of the prompts (prompt i on rank i mod N)."""

    def __init__(self, prompts: list[str], num_inference_steps: int = 50, guidance_scale: float = 6.0,
                 num_frames: int = 49, height: int = 480, width: int = 720, fps: int = 8, seed: int = 42,
                 every_n_validations: int = 1):
        self.prompts = list(prompts)
        self.kwargs = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                           num_frames=num_frames, height=height, width=width)
        self.fps, self.seed, self.every = fps, seed, every_n_validations
        self._validations = 0
        self.last_paths: list[Path] = []

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.prompts:
            return
        self._validations += 1
        if (self._validations - 1) % self.every:
            return
        from diffusers.utils import export_to_video

        out = run_dir(trainer) / "samples" / f"step_{trainer.global_step:06d}"
        out.mkdir(parents=True, exist_ok=True)
        with pl_module.sampling_pipeline() as pipe:
            for i, prompt in enumerate(self.prompts):
                if i % trainer.world_size != trainer.global_rank:
                    continue
                g = torch.Generator(pl_module.device).manual_seed(self.seed + i)
                with trainer.precision_plugin.forward_context():
                    frames = pipe(prompt=prompt, generator=g, output_type="np",
                                  max_sequence_length=pl_module.max_text_len, **self.kwargs).frames[0]
                path = out / f"{i:02d}.mp4"
                export_to_video(list(frames), str(path), fps=self.fps)
        trainer.strategy.barrier("SampleVideos")
        self.last_paths = sorted(out.glob("*.mp4"))
        if not trainer.is_global_zero:
            return
        (out / "prompts.txt").write_text("".join(f"{i:02d}.mp4\t{p}\n" for i, p in enumerate(self.prompts)))
        logger = mlflow_logger(trainer)
        if logger is not None:
            logger.log_artifact(out, f"samples/step_{trainer.global_step:06d}")
        rank_zero_info(f"sample videos: {out}")


class InitialValidation(L.Callback):
    """Log ``val/loss`` at step 0, before any update, so every run's curve starts from the base model."""

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.global_step != 0 or trainer.datamodule is None:
            return
        losses = []
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            for i, batch in enumerate(trainer.datamodule.val_dataloader()):
                batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                losses.append(pl_module.validation_loss(batch, i))
        loss = torch.stack(losses).mean()
        loss = trainer.strategy.reduce(loss, reduce_op="mean")
        for logger in trainer.loggers:
            logger.log_metrics({"val/loss": float(loss)}, step=0)
        rank_zero_info(f"val/loss before training: {float(loss):.4f}")


class StepStats(L.Callback):
    """Log step time, samples/s and (on GPU) peak memory for each optimizer step."""

    def __init__(self, log_every_n_steps: int = 1):
        self.every = log_every_n_steps
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = None
        if (trainer.global_step + 1) % self.every:
            return  # not a logged step: no synchronisation, the host keeps running ahead of the GPU
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._t0 is None or trainer.global_step % self.every:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - self._t0
        size = len(batch["caption"]) * trainer.world_size
        metrics = {"perf/step_time_s": dt, "perf/samples_per_s": size / dt}
        if pl_module.device.type == "cuda":
            metrics["perf/gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)
