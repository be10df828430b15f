"""Training callbacks: validation videos, the step-0 validation loss, step performance."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from workbench.common import atomic_write_text, write_video
from workbench.model.families import Clip
from workbench.model.pipeline import render_videos
from workbench.tracking.runs import mlflow_logger, run_dir


class ValidationVideos(L.Callback):
    """Generate videos for fixed prompts at validation and log them as mp4 artifacts.

    With several processes each renders its share of the prompts (prompt i on rank i mod N). ``num_frames``,
    ``height``, ``width`` and ``fps`` default to the model family's native clip; a clip the family cannot take
    is a one-line error when training starts, not after the first validation."""

    def __init__(self, prompts: list[str], num_inference_steps: int = 50, guidance_scale: float = 6.0,
                 num_frames: int | None = None, height: int | None = None, width: int | None = None,
                 fps: float | None = None, seed: int = 42, every_n_validations: int = 1,
                 images: list[str] | None = None):
        self.prompts = list(prompts)
        self.images = list(images) if images is not None else None  # image-to-video: one first frame per prompt
        self._pil: list = []
        self.steps, self.guidance_scale = num_inference_steps, guidance_scale
        self.clip = dict(num_frames=num_frames, height=height, width=width)
        self.fps, self.seed, self.every = fps, seed, every_n_validations
        self._validations = 0
        self.last_paths: list[Path] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        clip = pl_module.family.clip(**self.clip, fps="auto" if self.fps is None else self.fps)
        self.clip, self.fps = dict(num_frames=clip.num_frames, height=clip.height, width=clip.width), clip.fps
        pl_module.family.check_clip(**self.clip, where="ValidationVideos")
        self._pil = self.conditioning_images(pl_module.family)

    def conditioning_images(self, family) -> list | None:
        """The images the validation videos start from (one per prompt, PIL), checked against the family and framed
        to the clip once, when training starts (``sampling_inputs``: an image-to-video family needs one per prompt,
        a text-to-video one takes none)."""
        from workbench.model.pipeline import load_conditioning_image

        images = [load_conditioning_image(p, "ValidationVideos init_args.images:") for p in self.images or []] or None
        return family.sampling_inputs(images, self.clip["height"], self.clip["width"], len(self.prompts),
                                      where="ValidationVideos init_args.images").get("image")

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.prompts:
            return
        self._validations += 1
        if (self._validations - 1) % self.every:
            return
        out = run_dir(trainer) / "samples" / f"step_{trainer.global_step:06d}"
        out.mkdir(parents=True, exist_ok=True)
        clip = Clip(fps=self.fps, **self.clip)
        with pl_module.sampling_pipeline() as pipe:
            for i, prompt in enumerate(self.prompts):
                if i % trainer.world_size != trainer.global_rank:
                    continue
                with trainer.precision_plugin.forward_context():
                    frames = render_videos(pipe, pl_module.family, [prompt], [self.seed + i], clip, steps=self.steps,
                                           guidance=self.guidance_scale, images=[self._pil[i]] if self._pil else None,
                                           generator_device=pl_module.device, where="ValidationVideos")[0]
                write_video(out / f"{i:02d}.mp4", frames, self.fps)  # atomic; a full disk: DiskFull, one line
        trainer.strategy.barrier("ValidationVideos")
        self.last_paths = sorted(out.glob("*.mp4"))
        if not trainer.is_global_zero:
            return
        atomic_write_text(out / "prompts.txt", "".join(f"{i:02d}.mp4\t{p}\n" for i, p in enumerate(self.prompts)),
                          what="the validation prompts")
        logger = mlflow_logger(trainer)
        if logger is not None:
            logger.log_artifact(out, f"samples/step_{trainer.global_step:06d}")
        rank_zero_info(f"sample videos: {out}")


class InitialValidation(L.Callback):
    """Log the validation losses (``val/loss`` and per timestep bucket) at step 0, before any update, so every
    run's curves start from the base model."""

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.global_step != 0 or trainer.datamodule is None:
            return
        sums, count = {}, 0
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            for batch in trainer.datamodule.val_dataloader():
                batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                n = len(batch["caption"])  # weighted by batch size, as Lightning's epoch mean of self.log
                for name, value in pl_module.validation_losses(batch).items():
                    sums[name] = sums.get(name, 0.0) + value * n
                count += n
        values = {k: float(trainer.strategy.reduce(v / count, reduce_op="mean")) for k, v in sums.items()}
        for logger in trainer.loggers:
            logger.log_metrics(values, step=0)
        rank_zero_info(f"val/loss before training: {values['val/loss']:.4f}")


class StepStats(L.Callback):
    """Log step time, samples/s and (on GPU) peak allocated and peak reserved memory for each logged step."""

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
            # Reserved is what runs out: the caching allocator holds more than is allocated (a 48 GB A6000
            # has about 47.5 GiB for it after the CUDA context).
            metrics["perf/gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            metrics["perf/gpu_reserved_peak_gib"] = torch.cuda.max_memory_reserved() / 2**30
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)


def step_progress_bar():
    """The class of Lightning's Rich progress bar described by optimizer step ("step 120/300") instead of
    "Epoch 74/-2" (a run bounded by ``max_steps`` has ``max_epochs`` -1); built on call, so Lightning's
    progress module is imported only when a trainer exists."""
    from lightning.pytorch.callbacks import RichProgressBar

    class StepProgressBar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            max_steps = self.trainer.max_steps
            if max_steps is None or max_steps < 0:
                return super()._get_train_description(current_epoch)
            text = f"step {self.trainer.global_step}/{max_steps}"
            return f"{text:{len(self.validation_description)}}" if len(self.validation_description) > len(text) else text

    return StepProgressBar
