"""Scoring generated videos: frame-averaged CLIP score per video and the FVD of the set (and, for suites with
images, each video's first-frame PSNR/SSIM and CLIP image similarity)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.common import atomic_write_bytes, atomic_write_json, file_sha256, first_line
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
    features: Any = None  # the video's FVD features (numpy, D), for the FVD and its bootstrap intervals
    first_frame: Any = None  # uint8 (H, W, C): the grid's frame (kept for each prompt's first-seed video)
    values: dict | None = None  # the suite's other per-video metrics (image fidelity: first_frame_psnr, ...)

    @property
    def key(self) -> tuple:
        return (self.prompt_index, self.seed)


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
    means: dict | None = None  # the other per-video metrics' means over the videos (``VideoScore.values``)

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
        for name, value in (self.means or {}).items():
            out[f"eval/{name}{suffix}"] = value
        if self.accuracy is not None:
            out.update(self.accuracy.metrics(suffix))
        return out

    def value_names(self) -> list[str]:
        """The per-video metrics beside the CLIP score (image fidelity's, for suites with images)."""
        return list(self.means or {})


def score_batch(metrics: SuiteMetrics, batch: VideoBatch) -> list[VideoScore]:
    """Each video of ``batch`` scored on its own: its frame-averaged CLIP score against its prompt, its FVD
    features and (suites with an oracle) the oracle's verdict. The metrics' states grow by the batch."""
    import torch

    oracle = get_oracle(metrics.suite.oracle) if metrics.suite.oracle else None
    frames = batch.frames.to(metrics.device)
    before, rows = len(metrics.clip.scores), metrics.fvd.features().shape[0]
    metrics.clip.update(frames, batch.prompts)
    metrics.fvd.update(frames, real=False)
    scores = torch.cat(metrics.clip.scores[before:]).tolist()
    features = metrics.fvd.features()[rows:].double().cpu().numpy()
    checks = [check_video(oracle, v, p) if oracle else None for v, p in zip(batch.frames, batch.prompts)]
    values = [None] * len(batch.prompts)
    for metric in metrics.per_video:  # the suite's per-video metrics (workbench.eval.metrics), each by name
        for j, named in enumerate(metric.per_video(batch, frames)):
            values[j] = {**(values[j] or {}), **{k: float(v) for k, v in named.items()}}
    return [VideoScore(p, float(c), s, i, path, check, f, values=v) for p, c, s, i, path, check, f, v in
            zip(batch.prompts, scores, batch.seeds, batch.prompt_indices, batch.paths, checks, features, values)]


def score_videos(metrics: SuiteMetrics, batches: Iterable[VideoBatch]) -> SuiteScores:
    """Frame-averaged CLIP score of every video against its prompt and the FVD of all of them
    against the suite's reference statistics. ``batches`` may be a generator (it is consumed once,
    so videos never need to be in memory together): ``score_videos(m, generate_suite_videos(...))``.

    With several processes (torch.distributed) every process scores its share and the per-video records
    are gathered, in (prompt, seed) order; the set's numbers are then ``set_scores`` of all of them, in
    every process. With fewer videos than the I3D feature dimension (400) the FVD warns: its covariance
    is rank-deficient and the number is comparable only within the same suite and video count.
    """
    import torch

    metrics.reset()
    videos: list[VideoScore] = []
    for batch in batches:
        videos += score_batch(metrics, batch)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, videos)
        videos = sorted((v for part in gathered for v in part), key=lambda v: (v.prompt_index, v.seed))
    return set_scores(metrics, videos)


def set_scores(metrics: SuiteMetrics, videos: list[VideoScore]) -> SuiteScores:
    """The set's numbers from its per-video records, in the order given: the mean CLIP score (float32, as
    ``VideoCLIPScore.compute``), the FVD of the videos' features against the cached reference statistics
    (``FrechetVideoDistance.compute``'s float64 math) and the oracle's prompt accuracy. Only the records are
    read, so an evaluation resumed or merged from stored records gives the numbers of one uninterrupted run."""
    import warnings

    import numpy as np
    import torch

    from workbench.metrics import feature_statistics, frechet_distance
    from workbench.metrics.fvd import PUBLISHED_NUM_VIDEOS

    if len(videos) < 2:
        raise EvalError(f"{len(videos)} videos to score: FVD needs at least 2 generated videos for a covariance")
    reference = metrics.fvd.reference
    features = np.stack([np.asarray(v.features, dtype=np.float64) for v in videos])
    if features.shape[0] <= features.shape[1]:
        warnings.warn(f"FVD generated set has {features.shape[0]} videos <= {features.shape[1]} feature dims, so its "
                      "covariance is rank-deficient and the FVD is not comparable to published numbers (StyleGAN-V "
                      f"uses {PUBLISHED_NUM_VIDEOS} videos per set).", UserWarning, stacklevel=2)
    fvd = frechet_distance(reference.mu, reference.sigma, *feature_statistics(features))
    clip_score = float(torch.tensor([v.clip_score for v in videos], dtype=torch.float32).mean())
    oracle = get_oracle(metrics.suite.oracle) if metrics.suite.oracle else None
    names = list(videos[0].values or {})
    if any(list(v.values or {}) != names for v in videos):
        raise EvalError(f"suite {metrics.suite.name}: the videos' records measure different metrics; evaluate "
                        "into a new --out")
    means = {k: float(torch.tensor([v.values[k] for v in videos], dtype=torch.float32).mean()) for k in names}
    return SuiteScores(clip_score=clip_score, fvd=float(fvd), num_videos=len(videos), means=means or None,
                       num_reference_videos=metrics.reference_videos, videos=videos,
                       accuracy=accuracy([v.oracle for v in videos], [v.prompt for v in videos], oracle.attributes)
                       if oracle else None,
                       reference=reference)


# -- per-video records: what a resumed, sharded or merged evaluation reads instead of generating again -----------
def record_stem(prompt_index: int, seed: int) -> str:
    return f"{prompt_index:03d}-seed{seed}"


def save_video_score(v: VideoScore, folder: Path, out: Path) -> None:
    """Write ``v``'s record into ``folder``: ``<stem>.safetensors`` (its FVD features, float64, and the grid's
    first frame) and then ``<stem>.json`` (prompt, seed, CLIP score, oracle verdict, the video's path relative
    to ``out`` and the sha256 of the video and of the tensors). Each file is written atomically and the JSON
    last: a video counts as finished once its JSON exists. Its mp4 must be written before."""
    import numpy as np
    from safetensors.numpy import save

    folder.mkdir(parents=True, exist_ok=True)
    stem = record_stem(v.prompt_index, v.seed)
    tensors = {"features": np.ascontiguousarray(v.features, dtype=np.float64)}
    if v.first_frame is not None:
        tensors["first_frame"] = np.ascontiguousarray(v.first_frame, dtype=np.uint8)
    data = save(tensors)
    atomic_write_bytes(folder / f"{stem}.safetensors", data, what="a video's FVD features")
    record = {"prompt_index": v.prompt_index, "prompt": v.prompt, "seed": v.seed, "clip_score": v.clip_score,
              "oracle": v.oracle, "values": v.values, "video": Path(v.path).relative_to(out).as_posix(),
              "video_sha256": file_sha256(v.path), "tensors_sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_json(folder / f"{stem}.json", record, what="a video's scores")


def load_video_scores(folder: Path, out: Path) -> tuple[dict[tuple, VideoScore], list[str]]:
    """The finished videos' records in ``folder`` by (prompt index, seed), and the problems of those left out:
    a record whose video or tensors are missing or differ from what it recorded counts as not finished (the
    video is generated again)."""
    from safetensors.numpy import load

    found: dict[tuple, VideoScore] = {}
    problems: list[str] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            r = json.loads(path.read_text(encoding="utf-8"))
            video, tensors = out / r["video"], path.with_suffix(".safetensors")
            data = tensors.read_bytes()
            if hashlib.sha256(data).hexdigest() != r["tensors_sha256"]:
                problems.append(f"{tensors.name} differs from its record")
                continue
            if not video.is_file() or file_sha256(video) != r["video_sha256"]:
                problems.append(f"{r['video']} is missing or differs from its record")
                continue
            arrays = load(data)
            found[(r["prompt_index"], r["seed"])] = VideoScore(
                r["prompt"], r["clip_score"], r["seed"], r["prompt_index"], video, r.get("oracle"),
                arrays["features"], arrays.get("first_frame"), r.get("values"))
        except (OSError, ValueError, KeyError, TypeError) as e:
            problems.append(f"{path.name}: unreadable ({first_line(e)})")
    return found, problems


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
        for name in s.value_names():
            out[f"{name}{suffix}"] = bootstrap_mean([v.values[name] for v in s.videos],
                                                    num_resamples=10 * num_resamples, **common)
    if base is not None:
        out["clip_score_difference"] = bootstrap_difference(
            [v.clip_score for v in scores.videos], [v.clip_score for v in base.videos], keys=scores.keys(),
            base_keys=base.keys(), num_resamples=10 * num_resamples, **common)
        out["fvd_difference"] = bootstrap_fvd_difference(
            scores.fvd_features(), base.fvd_features(), scores.reference, keys=scores.keys(), base_keys=base.keys(),
            num_resamples=num_resamples, method="recentered", **common)
        for name in set(scores.value_names()) & set(base.value_names()):
            out[f"{name}_difference"] = bootstrap_difference(
                [v.values[name] for v in scores.videos], [v.values[name] for v in base.videos], keys=scores.keys(),
                base_keys=base.keys(), num_resamples=10 * num_resamples, **common)
    return out
