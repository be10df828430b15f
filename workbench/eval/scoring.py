"""Scoring generated videos: frame-averaged CLIP score per video and the FVD of the set."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from workbench.eval.generation import VideoBatch
from workbench.eval.reference import SuiteMetrics
from workbench.eval.suite import EvalError


@dataclass
class VideoScore:
    prompt: str
    clip_score: float
    seed: int | None = None
    prompt_index: int | None = None
    path: Path | None = None


@dataclass
class SuiteScores:
    """Per-video CLIP scores and the set's mean CLIP score and FVD."""

    clip_score: float
    fvd: float
    num_videos: int
    num_reference_videos: int
    videos: list[VideoScore]

    def metrics(self, suffix: str = "") -> dict[str, float]:
        """``eval/clip_score``, ``eval/fvd`` and counts; ``suffix`` (``_base``) names another model's."""
        return {f"eval/clip_score{suffix}": self.clip_score, f"eval/fvd{suffix}": self.fvd,
                f"eval/num_videos{suffix}": float(self.num_videos),
                "eval/num_reference_videos": float(self.num_reference_videos)}


def score_videos(metrics: SuiteMetrics, batches: Iterable[VideoBatch]) -> SuiteScores:
    """Frame-averaged CLIP score of every video against its prompt and the FVD of all of them
    against the suite's reference statistics. ``batches`` may be a generator (it is consumed once,
    so videos never need to be in memory together): ``score_videos(m, generate_suite_videos(...))``.

    With fewer videos than the I3D feature dimension (400) the FVD metric warns: its covariance is
    rank-deficient and the number is comparable only within the same suite and video count.
    """
    import torch

    metrics.clip.reset()
    metrics.fvd.reset()
    videos: list[VideoScore] = []
    for batch in batches:
        frames = batch.frames.to(metrics.device)
        before = len(metrics.clip.scores)
        metrics.clip.update(frames, batch.prompts)
        metrics.fvd.update(frames, real=False)
        scores = torch.cat(metrics.clip.scores[before:]).tolist()
        videos += [VideoScore(p, float(c), s, i, path) for p, c, s, i, path in
                   zip(batch.prompts, scores, batch.seeds, batch.prompt_indices, batch.paths)]
    # compute() reduces the metric states over processes (torchmetrics' sync) when distributed;
    # every process must call it. The per-video records are gathered alongside.
    clip_score, fvd = float(metrics.clip.compute()), float(metrics.fvd.compute())
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, videos)
        videos = sorted((v for part in gathered for v in part), key=lambda v: (v.prompt_index, v.seed))
    if not videos:
        raise EvalError("no videos to score")
    return SuiteScores(clip_score=clip_score, fvd=fvd, num_videos=len(videos),
                       num_reference_videos=metrics.reference_videos, videos=videos)
