"""Generating a suite's videos with a stock ``CogVideoXPipeline``: fixed seeds, one mp4 per video."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.eval.suite import Suite


@dataclass
class VideoBatch:
    """Videos (B, F, C, H, W) in [0, 1] on the CPU with their prompts (and, when generated for a
    suite, prompt indices, seeds and mp4 paths)."""

    frames: Any  # torch.Tensor (B, F, C, H, W) in [0, 1]
    prompts: list[str]
    seeds: list[int | None] = field(default_factory=list)
    prompt_indices: list[int | None] = field(default_factory=list)
    paths: list[Path | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if self.frames.shape[0] != n:
            raise ValueError(f"{self.frames.shape[0]} videos but {n} prompts")
        self.seeds = list(self.seeds) or [None] * n
        self.prompt_indices = list(self.prompt_indices) or [None] * n
        self.paths = list(self.paths) or [None] * n


def _suite_scheduler(pipe, name: str):
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

    cls = {"dpm": CogVideoXDPMScheduler, "ddim": CogVideoXDDIMScheduler}[name]
    return cls.from_config(pipe.scheduler.config)


def video_file_name(prompt_index: int, seed: int) -> str:
    return f"{prompt_index:03d}-seed{seed}.mp4"


def generate_suite_videos(pipe, suite: Suite, out_dir: str | os.PathLike | None = None, *,
                          context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                          progress: bool = True, desc: str | None = None, rank: int = 0,
                          world_size: int = 1) -> Iterator[VideoBatch]:
    """Generate every (prompt, seed) video of ``suite`` with a stock ``CogVideoXPipeline``.

    Yields one ``VideoBatch`` per pipeline call (``suite.batch_size`` videos, as a prompt list).
    Each video has its own CPU generator seeded with its seed, so a video does not depend (beyond
    float round-off) on the batch it lands in, and its noise not on the device. ``pipe.scheduler`` is replaced by the suite's scheduler built
    from the model's scheduler config. With ``out_dir`` each video is saved as
    ``<out_dir>/<prompt index>-seed<seed>.mp4``. ``context`` wraps every pipeline call (the
    training callback passes the precision plugin's forward context). With ``world_size`` > 1,
    process ``rank`` generates pipeline batches ``rank::world_size``: whole batches move, so every
    video is computed exactly as in one process.
    """
    import torch
    from diffusers.utils import export_to_video
    from tqdm.auto import tqdm

    pipe.scheduler = _suite_scheduler(pipe, suite.scheduler)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    jobs = suite.jobs()
    chunks = [jobs[i:i + suite.batch_size] for i in range(0, len(jobs), suite.batch_size)][rank::world_size]
    max_len = pipe.transformer.config.max_text_seq_length
    bar = tqdm(total=sum(len(c) for c in chunks), desc=desc or f"{suite.name}: {len(suite.prompts)} prompts x {len(suite.seeds)} seeds",
               unit="video", disable=not progress)
    try:
        for chunk in chunks:
            generators = [torch.Generator("cpu").manual_seed(seed) for _, _, seed in chunk]
            with context():
                out = pipe(prompt=[p for _, p, _ in chunk], num_videos_per_prompt=1, generator=generators,
                           num_frames=suite.num_frames, height=suite.height, width=suite.width,
                           num_inference_steps=suite.num_inference_steps, guidance_scale=suite.guidance_scale,
                           max_sequence_length=max_len, output_type="pt")
            frames = out.frames.float().clamp(0, 1).cpu()
            paths: list[Path | None] = [None] * len(chunk)
            if out_dir is not None:
                for k, (i, _, seed) in enumerate(chunk):
                    paths[k] = out_dir / video_file_name(i, seed)
                    export_to_video(list(frames[k].permute(0, 2, 3, 1).numpy()), str(paths[k]), fps=suite.fps)
            bar.update(len(chunk))
            yield VideoBatch(frames, [p for _, p, _ in chunk], [s for _, _, s in chunk], [i for i, _, _ in chunk],
                             paths)
    finally:
        bar.close()
