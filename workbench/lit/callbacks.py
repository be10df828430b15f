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

from workbench.tracking import mlflow_logger


def run_dir(trainer: L.Trainer) -> Path:
    """``<default_root_dir>/<mlflow run id>``: where a run's config, checkpoints and samples live."""
    logger = mlflow_logger(trainer)
    name = logger.run_id if logger is not None else f"version_{trainer.logger.version if trainer.logger else 0}"
    return Path(trainer.default_root_dir) / name


class LogRecipe(SaveConfigCallback):
    """Save the fully resolved recipe in the run directory and log it to MLflow (params + artifact).

    Also points checkpoints at ``<run dir>/checkpoints`` so runs never overwrite each other.
    """

    def __init__(self, *args, **kwargs):
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer, pl_module, stage) -> None:
        directory = run_dir(trainer)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "config.yaml"
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=False)
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = str(directory / "checkpoints")
        logger = mlflow_logger(trainer)
        if logger is not None:
            config = yaml.safe_load(path.read_text())
            logger.log_hyperparams(config)
            logger.log_artifact(path, "recipe")
            logger.experiment.set_tag(logger.run_id, "workbench.run_dir", str(directory.resolve()))


class SampleVideos(L.Callback):
    """Generate videos for fixed prompts at validation and log them as mp4 artifacts."""

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
        paths = []
        with pl_module.sampling_pipeline() as pipe:
            for i, prompt in enumerate(self.prompts):
                g = torch.Generator(pl_module.device).manual_seed(self.seed + i)
                with trainer.precision_plugin.forward_context():
                    frames = pipe(prompt=prompt, generator=g, output_type="np",
                                  max_sequence_length=pl_module.max_text_len, **self.kwargs).frames[0]
                path = out / f"{i:02d}.mp4"
                export_to_video(list(frames), str(path), fps=self.fps)
                paths.append(path)
        (out / "prompts.txt").write_text("".join(f"{i:02d}.mp4\t{p}\n" for i, p in enumerate(self.prompts)))
        self.last_paths = paths
        logger = mlflow_logger(trainer)
        if logger is not None and trainer.is_global_zero:
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
