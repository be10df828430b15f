"""Generating a suite's videos with a stock ``CogVideoXPipeline``: fixed seeds, one mp4 per video."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.common import write_video
from workbench.eval.suite import EvalError, Suite
from workbench.model.families import Clip, FamilyError, family_of_pipeline
from workbench.model.pipeline import render_videos


@dataclass
class VideoBatch:
    """Videos (B, F, C, H, W) in [0, 1] on the CPU with their prompts (and, when generated for a
    suite, prompt indices, seeds and mp4 paths)."""

    frames: Any  # torch.Tensor (B, F, C, H, W) in [0, 1]
    prompts: list[str]
    seeds: list[int | None] = field(default_factory=list)
    prompt_indices: list[int | None] = field(default_factory=list)
    paths: list[Path | None] = field(default_factory=list)
    images: Any = None  # image-to-video: the conditioning images (B, C, H, W) in [0, 1] as the pipeline got them

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


def video_progress(total: int, done: int, desc: str, disable: bool = False):
    """A tqdm bar of videos that starts at the ``done`` ones: done / total and the ETA; ``show_rate`` adds the
    videos per hour (of this run's own videos: a resumed run's finished ones took no time)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="video", disable=disable,
                bar_format="{desc}: {n_fmt}/{total_fmt} videos |{bar}| [{elapsed} elapsed, ETA {remaining}{postfix}]")


def show_rate(bar) -> None:
    """Set ``bar``'s postfix to the videos per hour since it started (its initial count left out)."""
    if bar.disable:
        return
    elapsed = bar.format_dict["elapsed"]
    if elapsed > 0 and bar.n > bar.format_dict["initial"]:
        bar.set_postfix_str(f"{(bar.n - bar.format_dict['initial']) / elapsed * 3600:.4g} videos/h")


def generate_suite_videos(pipe, suite: Suite, out_dir: str | os.PathLike | None = None, *,
                          context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                          progress: bool = True, desc: str | None = None, rank: int = 0,
                          world_size: int = 1, embeddings: dict | None = None,
                          done: Collection[tuple[int, int]] = ()) -> Iterator[VideoBatch]:
    """Generate every (prompt, seed) video of ``suite`` with a stock ``CogVideoXPipeline`` (or, for an
    image-to-video model and a suite with ``images``, ``CogVideoXImageToVideoPipeline`` from each prompt's image).

    Yields one ``VideoBatch`` per pipeline call (``suite.batch_size`` videos, as a prompt list).
    Each video has its own CPU generator seeded with its seed, so a video does not depend (beyond
    float round-off) on the batch it lands in, and its noise not on the device. ``pipe.scheduler`` is replaced by the suite's scheduler built
    from the model's scheduler config. With ``out_dir`` each video is saved as
    ``<out_dir>/<prompt index>-seed<seed>.mp4`` (atomically: ``write_video``). ``context`` wraps every pipeline
    call (the training callback passes the precision plugin's forward context). With ``world_size`` > 1,
    process ``rank`` generates pipeline batches ``rank::world_size``: whole batches move, so every
    video is computed exactly as in one process (``workbench eval --shard`` splits a suite the same way).

    ``done``: (prompt index, seed) of videos already finished (a resumed evaluation). A pipeline batch whose
    videos are all done is skipped; one that is partly done (a run stopped between its videos' writes) is
    generated again whole, so that every video is computed in the batch it always lands in, and only its
    missing videos are written. The bar starts at the finished count.

    ``suite.approximate`` (an approximate lever, workbench.model.caching) is enabled on ``pipe.transformer``
    for each pipeline call and removed after it (a fresh cache state per call; the pipeline is exact again).

    ``embeddings`` (a dict, kept by the caller) caches each prompt's T5 embeddings (and the empty negative
    prompt's, for guidance): each prompt is encoded once, however many seeds and however many models that
    share the text encoder (base and fine-tuned: the workbench never trains T5) generate from it.
    """
    import torch

    from workbench.model.caching import approximation

    pipe.scheduler = _suite_scheduler(pipe, suite.scheduler)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    done = set(done)
    jobs = suite.jobs()
    chunks = [jobs[i:i + suite.batch_size] for i in range(0, len(jobs), suite.batch_size)][rank::world_size]
    family = family_of_pipeline(pipe)
    try:  # a suite clip the model's family cannot take ends here, in one line, before any video is generated
        family.check_clip(suite.num_frames, suite.height, suite.width, where=f"suite {suite.name}")
    except FamilyError as e:
        raise EvalError(str(e)) from None
    pil_images = suite.conditioning_images() if suite.images else None
    clip = Clip(suite.num_frames, suite.height, suite.width, suite.fps)
    try:  # the family checks the images (one per prompt for image-to-video, none for text-to-video) and frames them
        prepared = family.sampling_inputs(pil_images, clip.height, clip.width, len(suite.prompts),
                                          where=f"suite {suite.name} (images: or images_file:, evals/README.md)")
    except FamilyError as e:
        raise EvalError(str(e)) from None
    framed = prepared.get("image")  # each prompt's image, framed once for all its videos
    image_tensors = None
    if framed:  # first frames are scored against the image as the pipeline got it
        from workbench.metrics.image_fidelity import conditioning_image_tensor

        image_tensors = [conditioning_image_tensor(im, clip.height, clip.width) for im in framed]
    max_len = family.text_len
    total = sum(len(c) for c in chunks)
    finished = sum((i, s) in done for c in chunks for i, _, s in c)
    bar = video_progress(total, finished, desc or f"{suite.name}: {len(suite.prompts)} prompts x {len(suite.seeds)} seeds",
                         disable=not progress)
    try:
        for chunk in chunks:
            todo = [(i, s) not in done for i, _, s in chunk]
            if not any(todo):
                continue
            prompts = [p for _, p, _ in chunk]
            with approximation(pipe, suite.approximate), context():  # fresh lever state each call, removed after
                text = (None if embeddings is None else
                        prompt_embeddings(pipe, prompts, embeddings, max_len, suite.guidance_scale > 1))
                # the image of each video's prompt (CogVideoXImageToVideoPipeline takes one per prompt)
                frames = render_videos(pipe, family, prompts, [s for _, _, s in chunk], clip,
                                       steps=suite.num_inference_steps, guidance=suite.guidance_scale,
                                       images=[framed[i] for i, _, _ in chunk] if framed else None, text=text,
                                       where=f"suite {suite.name}")
            paths: list[Path | None] = [None] * len(chunk)
            if out_dir is not None:
                for k, (i, _, seed) in enumerate(chunk):
                    paths[k] = out_dir / video_file_name(i, seed)
                    if todo[k]:
                        write_video(paths[k], frames[k], suite.fps)
            images = (torch.stack([image_tensors[i] for i, _, _ in chunk]) if image_tensors is not None else None)
            yield VideoBatch(frames, [p for _, p, _ in chunk], [s for _, _, s in chunk], [i for i, _, _ in chunk],
                             paths, images)
            bar.update(sum(todo))
            show_rate(bar)
    finally:
        bar.close()


def prompt_embeddings(pipe, prompts: list[str], cache: dict, max_len: int, guidance: bool) -> dict:
    """``prompt_embeds`` (and ``negative_prompt_embeds`` with guidance) for a pipeline call, each prompt encoded
    once, on its own, into ``cache`` by the pipeline's own ``encode_prompt`` (the empty negative prompt, as the
    pipeline's default)."""
    import torch

    for p in dict.fromkeys(prompts):
        if p in cache:
            continue
        # One prompt a call: a prompt's embedding never depends on which others are encoded with it, so a resumed
        # or sharded evaluation (which starts at other prompts) renders every video exactly as one whole run.
        positive, negative = pipe.encode_prompt(
            prompt=[p], negative_prompt=[""] if guidance else None, do_classifier_free_guidance=guidance,
            num_videos_per_prompt=1, max_sequence_length=max_len, device=pipe._execution_device)
        cache[p] = (positive[0].cpu(), negative[0].cpu() if guidance else None)
    device, dtype = pipe._execution_device, pipe.transformer.dtype
    out = {"prompt_embeds": torch.stack([cache[p][0] for p in prompts]).to(device, dtype)}
    if guidance:
        out["negative_prompt_embeds"] = torch.stack([cache[p][1] for p in prompts]).to(device, dtype)
    return out
