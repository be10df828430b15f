"""Scoring generated videos: frame-averaged CLIP score per video and the FVD of the set."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.eval.generation import VideoBatch
from workbench.eval.reference import SuiteMetrics
from workbench.eval.suite import EvalError
from workbench.eval.oracles import accuracy, check_video, get_oracle


@dataclass
class VideoScore:
    prompt: str
    clip_score: float
    seed: int | None = None
    prompt_index: int | None = None
    path: Path | None = None
    oracle: dict | None = None  # the oracle's reading and per-attribute verdict (suites with ``oracle:``)
    features: Any = None  # the video's FVD features (numpy, D), for the bootstrap intervals


@dataclass
class SuiteScores:
    """Per-video CLIP scores and the set's mean CLIP score and FVD."""

    clip_score: float
    fvd: float
    num_videos: int
    num_reference_videos: int
    videos: list[VideoScore]
    accuracy: Any = None  # workbench.eval.oracles.PromptAccuracy for suites with an oracle
    reference: Any = None  # the real videos' ReferenceStatistics the FVD was measured against

    def keys(self) -> list[tuple]:
        """(prompt index, seed) of every video: what pairs two models' videos."""
        return [(v.prompt_index, v.seed) for v in self.videos]

    def fvd_features(self):
        import numpy as np

        return np.stack([v.features for v in self.videos])

    def metrics(self, suffix: str = "") -> dict[str, float]:
        """``eval/clip_score``, ``eval/fvd``, counts and (with an oracle) ``eval/accuracy/<attribute>``;
        ``suffix`` (``_base``) names another model's."""
        out = {f"eval/clip_score{suffix}": self.clip_score, f"eval/fvd{suffix}": self.fvd,
               f"eval/num_videos{suffix}": float(self.num_videos),
               "eval/num_reference_videos": float(self.num_reference_videos)}
        if self.accuracy is not None:
            out.update(self.accuracy.metrics(suffix))
        return out


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
    oracle = get_oracle(metrics.suite.oracle) if metrics.suite.oracle else None
    videos: list[VideoScore] = []
    for batch in batches:
        frames = batch.frames.to(metrics.device)
        before, rows = len(metrics.clip.scores), metrics.fvd.features().shape[0]
        metrics.clip.update(frames, batch.prompts)
        metrics.fvd.update(frames, real=False)
        scores = torch.cat(metrics.clip.scores[before:]).tolist()
        features = metrics.fvd.features()[rows:].double().cpu().numpy()
        checks = [check_video(oracle, v, p) if oracle else None for v, p in zip(batch.frames, batch.prompts)]
        videos += [VideoScore(p, float(c), s, i, path, check, f) for p, c, s, i, path, check, f in
                   zip(batch.prompts, scores, batch.seeds, batch.prompt_indices, batch.paths, checks, features)]
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
                       num_reference_videos=metrics.reference_videos, videos=videos,
                       accuracy=accuracy([v.oracle for v in videos], [v.prompt for v in videos], oracle.attributes)
                       if oracle else None,
                       reference=metrics.fvd.reference)


def confidence_intervals(scores: SuiteScores, base: SuiteScores | None = None, *, confidence: float = 0.95,
                         num_resamples: int = 1000, seed: int = 0) -> dict:
    """Seeded bootstrap intervals, resampling videos: CLIP score and FVD of ``scores`` (and of ``base``),
    and, with ``base``, the fine-tuned minus base differences, paired by (prompt, seed).

    CLIP score: percentile intervals of the mean of per-video scores. FVD: the reference statistics are
    held fixed (they are cached; only the generated videos are resampled), and the interval is recentred
    by the bootstrap's own bias estimate, because resampling duplicates videos and FVD rises with fewer
    distinct videos: a plain percentile interval of a small set sits above the FVD itself
    (workbench.metrics.bootstrap, evals/README.md).
    """
    from workbench.metrics.bootstrap import (
        bootstrap_difference, bootstrap_fvd, bootstrap_fvd_difference, bootstrap_mean,
    )

    common = dict(confidence=confidence, seed=seed)
    out = {}
    for suffix, s in (("", scores), ("_base", base)):
        if s is None:
            continue
        out[f"clip_score{suffix}"] = bootstrap_mean([v.clip_score for v in s.videos], num_resamples=10 * num_resamples,
                                                    **common)
        out[f"fvd{suffix}"] = bootstrap_fvd(s.fvd_features(), s.reference, num_resamples=num_resamples,
                                            method="recentered", **common)
    if base is not None:
        out["clip_score_difference"] = bootstrap_difference(
            [v.clip_score for v in scores.videos], [v.clip_score for v in base.videos], keys=scores.keys(),
            base_keys=base.keys(), num_resamples=10 * num_resamples, **common)
        out["fvd_difference"] = bootstrap_fvd_difference(
            scores.fvd_features(), base.fvd_features(), scores.reference, keys=scores.keys(), base_keys=base.keys(),
            num_resamples=num_resamples, method="recentered", **common)
    return out
