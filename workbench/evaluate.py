"""``workbench eval``: generate a suite's videos with a model, score them (CLIP score, FVD), log to MLflow.

Read top to bottom: the suite (``Suite``, ``load_suite``: prompts, seeds, sampling settings,
reference videos, metric networks) -> the metric networks and the cached real-video statistics
(``load_suite_metrics``; every input is checked here, before anything is generated) -> generation
(``generate_suite_videos``: a stock ``CogVideoXPipeline``, fixed seeds, mp4 files) -> scoring
(``score_videos``: frame-averaged CLIP score per video, FVD of the set) -> results
(``results.json``, ``results.md``, a first-frame grid) -> MLflow (the training run's own run when a
checkpoint or run id is evaluated, else a new run in experiment ``workbench-eval``).

``evaluate`` is the whole job for the CLI and notebooks; the ``SuiteEvaluation`` callback runs the
same generation and scoring functions during training, at validation.

Video convention (as in ``workbench.metrics``): float tensors (B, F, C, H, W) in [0, 1].
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

EXPERIMENT = "workbench-eval"  # where evaluations of plain model directories go
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
CACHE_DIR_NAME = ".fvd_cache"
SCHEDULERS = ("dpm", "ddim")


class EvalError(Exception):
    """Bad input to an evaluation (suite, paths, model); printed without a traceback."""


# -- the suite -------------------------------------------------------------------------------------
class SuiteError(EvalError, ValueError):
    """A suite file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Suite:
    """An evaluation suite: what to generate, how, and what to compare it with.

    Every prompt is generated once per seed (the same seeds for every prompt and every model).
    ``reference`` is a dataset folder of real videos (any layout ``read_manifest`` reads);
    ``clip_model`` a hub id or local CLIP directory; ``fvd_detector`` StyleGAN-V's
    ``i3d_torchscript.pt``. ``batch_size`` is videos per pipeline call. ``scheduler`` is the
    sampler, built from the model's own scheduler config: ``dpm`` (CogVideoXDPMScheduler, what the
    training module's pipeline and the diffusers trainer's validation use) or ``ddim``.
    """

    name: str
    prompts: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    num_frames: int = 49
    height: int = 480
    width: int = 720
    fps: float = 8.0
    num_inference_steps: int = 50
    guidance_scale: float = 6.0
    batch_size: int = 1
    scheduler: str = "dpm"
    reference: Path | None = None
    clip_model: str | None = DEFAULT_CLIP_MODEL
    fvd_detector: Path | None = None
    description: str = ""
    path: Path | None = None  # the YAML file it was read from

    def __post_init__(self) -> None:
        from workbench.metrics.fvd import I3D_NUM_FRAMES

        where = str(self.path) if self.path else f"suite {self.name!r}"

        def fail(msg: str):
            raise SuiteError(f"{where}: {msg}")

        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            fail(f"name={self.name!r}: use letters, digits, '_', '.', '-' (it names MLflow artifact folders)")
        if isinstance(self.prompts, str) or isinstance(self.seeds, (str, int)):
            fail("prompts and seeds must be lists")
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        if not self.prompts:
            fail("the suite has no prompts; list them under `prompts:` (or point `prompts_file:` at a text file)")
        for i, p in enumerate(self.prompts):
            if not isinstance(p, str) or not p.strip():
                fail(f"prompts[{i}] is empty or not text: {p!r}")
        if not self.seeds:
            fail("seeds is empty; give at least one integer seed")
        if any(not _is_int(s) for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            fail(f"seeds={list(self.seeds)}: must be distinct integers")
        for key in ("num_frames", "height", "width", "num_inference_steps", "batch_size"):
            value = getattr(self, key)
            if not _is_int(value) or value < 1:
                fail(f"{key}={value!r}: must be a positive integer")
        if (self.num_frames - 1) % 4:
            fail(f"num_frames={self.num_frames}: CogVideoX needs 4k+1 frames (17, 49, ...)")
        if self.num_frames < I3D_NUM_FRAMES:
            fail(f"num_frames={self.num_frames}: FVD's I3D detector needs {I3D_NUM_FRAMES}-frame clips; "
                 "use 17 or more (4k+1)")
        if self.height % 16 or self.width % 16:
            fail(f"{self.height}x{self.width}: height and width must be multiples of 16")
        if not isinstance(self.fps, (int, float)) or isinstance(self.fps, bool) or self.fps <= 0:
            fail(f"fps={self.fps!r}: must be a positive number")
        if not isinstance(self.guidance_scale, (int, float)) or isinstance(self.guidance_scale, bool) \
                or self.guidance_scale < 0:
            fail(f"guidance_scale={self.guidance_scale!r}: must be a number >= 0 (1 or less turns guidance off)")
        if self.scheduler not in SCHEDULERS:
            fail(f"scheduler={self.scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
        if self.num_videos < 2:
            fail(f"{self.num_videos} video: FVD needs at least 2 generated videos for a covariance; "
                 "add prompts or seeds")

    @property
    def num_videos(self) -> int:
        return len(self.prompts) * len(self.seeds)

    def jobs(self) -> list[tuple[int, str, int]]:
        """(prompt index, prompt, seed) for every video, prompt by prompt."""
        return [(i, p, s) for i, p in enumerate(self.prompts) for s in self.seeds]

    def with_overrides(self, **changes: Any) -> Suite:
        """A copy with the non-None ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def settings(self) -> dict[str, Any]:
        """Flat, JSON-able settings (MLflow params, results.json)."""
        return {
            "name": self.name, "num_prompts": len(self.prompts), "seeds": list(self.seeds),
            "num_videos": self.num_videos, "num_frames": self.num_frames, "height": self.height,
            "width": self.width, "fps": self.fps, "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale, "scheduler": self.scheduler, "batch_size": self.batch_size,
            "reference": str(self.reference) if self.reference else None, "clip_model": self.clip_model,
            "fvd_detector": str(self.fvd_detector) if self.fvd_detector else None,
        }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_SUITE_KEYS = {f.name for f in dataclasses.fields(Suite)} - {"path"} | {"prompts_file"}


def _suite_path(value: Any, base: Path, key: str, where: Path) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise SuiteError(f"{where}: {key} must be a path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(base / path))


def _clip_model_ref(value: Any, base: Path, where: Path) -> str:
    """A hub id stays as it is; ``./x``, ``../x``, ``/x``, ``~/x`` or an existing ``base/x`` is a local path."""
    if not isinstance(value, str) or not value.strip():
        raise SuiteError(f"{where}: clip_model must be a hub id or a path, got {value!r}")
    if value.startswith((".", "/", "~")) or (base / value).exists():
        # absolute, so a relative "dir/name" is never mistaken for a hub id
        return str(_suite_path(value, base, "clip_model", where).absolute())
    return value


def load_suite(path: str | os.PathLike) -> Suite:
    """Read and validate a suite YAML (see evals/README.md for the fields).

    Relative paths (reference, fvd_detector, prompts_file, a local clip_model written ``./...`` or
    ``../...``) are resolved against the suite file's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: no such suite file (suites live in evals/suites/*.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise SuiteError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a suite is a YAML mapping of fields, got {type(data).__name__}")
    unknown = sorted(set(data) - _SUITE_KEYS)
    if unknown:
        raise SuiteError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_SUITE_KEYS))}")
    base = path.parent
    fields = dict(data)
    fields.setdefault("name", path.stem)
    prompts = fields.pop("prompts", None) or []
    if not isinstance(prompts, list):
        raise SuiteError(f"{path}: prompts must be a list of strings")
    if fields.get("prompts_file") is not None:
        prompts_file = _suite_path(fields.pop("prompts_file"), base, "prompts_file", path)
        if not prompts_file.is_file():
            raise SuiteError(f"{path}: prompts_file {prompts_file} does not exist")
        prompts = prompts + [line.strip() for line in prompts_file.read_text(encoding="utf-8").splitlines()
                             if line.strip()]
    fields.pop("prompts_file", None)
    fields["prompts"] = tuple(prompts)
    seeds = fields.get("seeds", [0])
    fields["seeds"] = tuple(seeds) if isinstance(seeds, list) else (seeds,)
    for key in ("reference", "fvd_detector"):
        if fields.get(key) is not None:
            fields[key] = _suite_path(fields[key], base, key, path)
    if fields.get("clip_model") is not None:
        fields["clip_model"] = _clip_model_ref(fields["clip_model"], base, path)
    else:
        fields.pop("clip_model", None)
    if "description" in fields:
        fields["description"] = str(fields["description"] or "").strip()
    return Suite(path=path, **fields)


# -- metric networks and reference statistics ------------------------------------------------------
@dataclass
class SuiteMetrics:
    """Loaded CLIP model, I3D detector and the real videos' FVD statistics of one suite."""

    suite: Suite
    clip: Any  # workbench.metrics.VideoCLIPScore
    fvd: Any  # workbench.metrics.FrechetVideoDistance with the cached reference statistics
    reference_videos: int
    cache_path: Path
    device: torch.device


def _reference_entries(root: Path):
    from workbench.data.manifest import ManifestError, read_manifest
    from workbench.metrics.fvd import PUBLISHED_NUM_VIDEOS

    try:
        entries = read_manifest(root)
    except ManifestError as e:
        raise EvalError(f"reference videos: {e}") from None
    missing = [e for e in entries if not e.path(root).is_file()]
    if missing:
        raise EvalError(f"reference videos: {missing[0].path(root)} ({missing[0].where}) does not exist"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if len(entries) < 2:
        raise EvalError(f"reference videos: {root} lists {len(entries)} video; FVD needs at least 2 real videos "
                        f"for a covariance (published FVD uses {PUBLISHED_NUM_VIDEOS})")
    return entries


def reference_cache_key(suite: Suite, root: Path, entries, detector_sha256: str) -> str:
    """Hex key of everything the reference statistics depend on: detector, videos, frames/size/fps."""
    from workbench.metrics.fvd import I3D_NUM_FRAMES

    files = []
    for e in entries:
        st = e.path(root).stat()
        files.append([e.file_name, st.st_size, st.st_mtime_ns])
    key = {"detector_sha256": detector_sha256, "reference": str(root.resolve()), "files": files,
           "num_frames": suite.num_frames, "height": suite.height, "width": suite.width, "fps": suite.fps,
           "i3d_frames": I3D_NUM_FRAMES, "protocol": "stylegan-v-fvd"}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def default_cache_dir(suite: Suite, fallback: Path) -> Path:
    """``<suite folder>/.fvd_cache`` when that folder is writable, else ``<fallback>/.fvd_cache``."""
    if suite.path is not None and os.access(suite.path.parent, os.W_OK):
        return suite.path.parent / CACHE_DIR_NAME
    return fallback / CACHE_DIR_NAME


def _reference_batches(suite: Suite, root: Path, entries, batch_size: int = 8) -> Iterator[torch.Tensor]:
    """Decoded reference clips, (B, F, C, H, W) in [0, 1], at the suite's frames/size/fps."""
    import torch

    from workbench.data.video import VideoError, load_clip

    batch = []
    for e in entries:
        try:
            clip = load_clip(e.path(root), suite.num_frames, suite.height, suite.width, suite.fps)
        except VideoError as err:
            raise EvalError(f"reference video {e.path(root)} ({e.where}): {err}; every reference video must "
                            f"give {suite.num_frames} frames at {suite.fps:g} fps: remove it from the manifest "
                            "or change the suite") from None
        batch.append(((clip + 1) / 2).clamp(0, 1).permute(1, 0, 2, 3))  # (C,F,H,W) [-1,1] -> (F,C,H,W) [0,1]
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def load_suite_metrics(suite: Suite, *, cache_dir: str | os.PathLike | None = None,
                       device: str | torch.device = "cpu", fallback_dir: str | os.PathLike = ".") -> SuiteMetrics:
    """Check the suite's metric inputs and load them: the CLIP model, the I3D detector, the reference
    statistics (from the cache, or decoded and computed, then cached).

    The cache file is ``<cache_dir>/fvd-ref-<suite>-<key>.safetensors``; the key hashes the detector
    file, the reference folder's path and files (names, sizes, mtimes) and the suite's frames, size
    and fps, so any change recomputes it. ``cache_dir`` defaults to ``default_cache_dir``.
    Raises EvalError (or FileNotFoundError from the metric loaders) for any bad input.
    """
    import torch

    from workbench.metrics import FrechetVideoDistance, VideoCLIPScore, reference_statistics
    from workbench.metrics.fvd import file_sha256

    if suite.fvd_detector is None:
        raise EvalError(f"suite {suite.name}: no fvd_detector; set it in the suite or pass --fvd-detector "
                        "(StyleGAN-V's i3d_torchscript.pt, see evals/README.md)")
    detector = Path(suite.fvd_detector).expanduser()
    if not detector.is_file():
        raise EvalError(f"FVD detector {detector} does not exist. Download StyleGAN-V's i3d_torchscript.pt "
                        "(see evals/README.md) and set fvd_detector in the suite or pass --fvd-detector.")
    if suite.reference is None:
        raise EvalError(f"suite {suite.name}: no reference videos; set `reference:` in the suite or pass --reference")
    root = Path(suite.reference)
    if not root.is_dir():
        raise EvalError(f"reference videos: {root}: folder not found; set `reference:` in the suite "
                        "(relative to the suite file) or pass --reference DIR")
    entries = _reference_entries(root)
    if not suite.clip_model:
        raise EvalError(f"suite {suite.name}: no clip_model; set it in the suite or pass --clip-model")
    try:
        # Default sync_on_compute: with several processes (SuiteEvaluation under DDP) compute() gathers
        # every process's states; in one process it is a no-op.
        clip = VideoCLIPScore(suite.clip_model)
    except FileNotFoundError as e:
        raise EvalError(f"CLIP model: {e}") from None

    sha = file_sha256(detector)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(suite, Path(fallback_dir))
    cache_path = cache_dir / f"fvd-ref-{suite.name}-{reference_cache_key(suite, root, entries, sha)}.safetensors"
    try:
        stats = reference_statistics(detector, _reference_batches(suite, root, entries), cache_path, device=device)
        fvd = FrechetVideoDistance(detector, reference=stats)
    except ValueError as e:  # a cache from another detector, a detector with the wrong output
        raise EvalError(f"FVD: {e}") from None
    device = torch.device(device)
    clip.to(device)
    fvd.to(device)
    return SuiteMetrics(suite, clip, fvd, stats.num_samples, cache_path, device)


# -- generation ------------------------------------------------------------------------------------
@dataclass
class VideoBatch:
    """Videos (B, F, C, H, W) in [0, 1] on the CPU with their prompts (and, when generated for a
    suite, prompt indices, seeds and mp4 paths)."""

    frames: torch.Tensor
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


# -- scoring ---------------------------------------------------------------------------------------
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


# -- results ---------------------------------------------------------------------------------------
def fvd_note(num_videos: int, num_reference: int) -> str | None:
    """Why an FVD is not comparable to published numbers, or None when both sets are large enough."""
    from workbench.metrics.fvd import I3D_FEATURE_DIM, PUBLISHED_NUM_VIDEOS

    small = min(num_videos, num_reference)
    if small > I3D_FEATURE_DIM:
        return None
    return (f"FVD from {num_videos} generated and {num_reference} reference videos (<= {I3D_FEATURE_DIM} I3D "
            f"feature dims): rank-deficient covariances; compare only within this suite at the same counts "
            f"(published FVD uses {PUBLISHED_NUM_VIDEOS} per set).")


def suite_results(suite: Suite, scores: SuiteScores, base: SuiteScores | None = None, *, out: Path | None = None,
                  info: dict | None = None) -> dict:
    """The content of results.json: settings, aggregate metrics, one row per video."""
    def rel(p: Path | None) -> str | None:
        if p is None:
            return None
        return p.relative_to(out).as_posix() if out is not None and p.is_relative_to(out) else str(p)

    metrics = scores.metrics()
    if base is not None:
        metrics.update(base.metrics("_base"))
    rows = []
    base_rows = {(v.prompt_index, v.seed): v for v in base.videos} if base is not None else {}
    for v in scores.videos:
        row = {"prompt_index": v.prompt_index, "prompt": v.prompt, "seed": v.seed, "clip_score": v.clip_score,
               "path": rel(v.path)}
        if base is not None:
            b = base_rows.get((v.prompt_index, v.seed))
            row.update(base_clip_score=b.clip_score if b else None, base_path=rel(b.path) if b else None)
        rows.append(row)
    return {"suite": suite.name, "suite_file": str(suite.path) if suite.path else None,
            "settings": suite.settings(), **(info or {}), "metrics": metrics,
            "fvd_note": fvd_note(scores.num_videos, scores.num_reference_videos), "videos": rows}


def results_markdown(results: dict) -> str:
    """results.md: the aggregate table and one row per video."""
    m = results["metrics"]
    base = "eval/clip_score_base" in m
    lines = [f"# Evaluation: suite `{results['suite']}`", ""]
    for key in ("model", "lora", "checkpoint", "global_step", "base_model", "run_id"):
        if results.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ')}: `{results[key]}`")
    s = results["settings"]
    lines += [f"- settings: {s['num_prompts']} prompts x {len(s['seeds'])} seeds, {s['num_frames']} frames "
              f"{s['height']}x{s['width']} @ {s['fps']:g} fps, {s['num_inference_steps']} steps ({s['scheduler']}), "
              f"guidance {s['guidance_scale']:g}", ""]
    lines += ["| metric | model |" + (" base |" if base else ""), "|---|---|" + ("---|" if base else "")]
    for name in ("clip_score", "fvd", "num_videos"):
        row = f"| `eval/{name}` | {m[f'eval/{name}']:.4g} |"
        lines.append(row + (f" {m[f'eval/{name}_base']:.4g} |" if base else ""))
    lines += [f"| `eval/num_reference_videos` | {m['eval/num_reference_videos']:.0f} |" + (" |" if base else ""), ""]
    if results.get("fvd_note"):
        lines += [f"Note: {results['fvd_note']}", ""]
    lines += ["| # | prompt | seed | CLIP |" + (" CLIP (base) |" if base else "") + " video |",
              "|---|---|---|---|" + ("---|" if base else "") + "---|"]
    for r in results["videos"]:
        prompt = r["prompt"].replace("|", "\\|")
        cells = f"| {r['prompt_index']} | {prompt} | {r['seed']} | {r['clip_score']:.3f} |"
        if base:
            cells += f" {r['base_clip_score']:.3f} |" if r.get("base_clip_score") is not None else " |"
        lines.append(cells + f" `{r['path']}` |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results_markdown(results))


def first_frame_grid(columns: dict[str, list[torch.Tensor]], path: Path, max_side: int = 256) -> Path:
    """A PNG grid of first frames: one row per prompt, one labelled column per model.

    ``columns`` maps a label to one (C, H, W) frame in [0, 1] per prompt.
    """
    from PIL import Image, ImageDraw

    labels = list(columns)
    rows = len(columns[labels[0]])
    _, h, w = columns[labels[0]][0].shape
    scale = min(1.0, max_side / max(h, w))
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    pad, header = 4, 16
    grid = Image.new("RGB", (len(labels) * (cw + pad) + pad, header + rows * (ch + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(labels):
        x = pad + c * (cw + pad)
        draw.text((x, 2), label, fill=(0, 0, 0))
        for r, frame in enumerate(columns[label]):
            img = Image.fromarray((frame.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy())
            if (cw, ch) != (w, h):
                img = img.resize((cw, ch), Image.BILINEAR)
            y = header + r * (ch + pad)
            grid.paste(img, (x, y))
            draw.text((x + 2, y + 1), str(r), fill=(255, 255, 255))
    grid.save(path)
    return path


def _tap_first_frames(batches: Iterable[VideoBatch], first_seed: int, store: dict[int, torch.Tensor]):
    """Pass batches through, keeping the first frame of each prompt's first-seed video."""
    for b in batches:
        for k, (i, s) in enumerate(zip(b.prompt_indices, b.seeds)):
            if s == first_seed:
                store[i] = b.frames[k, 0].clone()
        yield b


# -- what is evaluated -----------------------------------------------------------------------------
@dataclass
class ModelSource:
    """The model under evaluation, resolved from --model/--lora/--base-model, and its base."""

    label: str  # --model as given
    pipeline_dir: str | None = None  # a diffusers pipeline dir or hub id
    lora: Path | None = None
    checkpoint: Path | None = None
    global_step: int | None = None
    run: Any = None  # the MLflow run the results attach to (checkpoint / run id evaluations)
    base_model: str | None = None  # for --compare-base
    trained: Any = None  # workbench.export.TrainedCheckpoint of ``checkpoint``

    def load(self, device, dtype, compile: bool = False):
        """A ``CogVideoXPipeline`` of the model under evaluation on ``device`` in ``dtype``."""
        import torch

        if self.checkpoint is not None:
            from workbench.export import ExportError, load_finetuned

            try:
                pipe = load_finetuned(self.trained, base_model=self.base_model).pipeline()
            except ExportError as e:
                raise EvalError(str(e)) from None
            if dtype != torch.float32:
                pipe.to(dtype=dtype)
        else:
            pipe = _from_pretrained(self.pipeline_dir, dtype)
            if self.lora is not None:
                pipe.load_lora_weights(str(self.lora))
        return _ready(pipe, device, compile)

    def load_base(self, device, dtype, compile: bool = False):
        return _ready(_from_pretrained(self.base_model, dtype), device, compile)


def _from_pretrained(model: str, dtype):
    from diffusers import CogVideoXPipeline

    return CogVideoXPipeline.from_pretrained(model, torch_dtype=dtype, use_safetensors=True)


def _ready(pipe, device, compile: bool = False):
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)  # the harness's own bar counts videos
    pipe.vae.enable_slicing()
    pipe.transformer.eval()
    if compile:
        from workbench.model.speed import compile_blocks

        compile_blocks(pipe.transformer)
    return pipe


def _looks_like_hub_id(model: str) -> bool:
    return not Path(model).exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", model) is not None \
        and not model.endswith((".ckpt", ".safetensors"))


def resolve_model(model: str, *, lora: str | None = None, base_model: str | None = None,
                  compare_base: bool = False, tracking_uri: str) -> ModelSource:
    """--model (pipeline dir or hub id, a ``workbench fit`` checkpoint or run dir, an MLflow run id) -> ModelSource.

    Checks that every file exists and the checkpoint reads, without loading any model.
    """
    from workbench.model.loading import check_model_source

    src = ModelSource(label=model)
    path = Path(model).expanduser()
    if lora is not None:
        src.lora = Path(lora).expanduser()
        if not src.lora.exists():
            raise EvalError(f"--lora {lora}: no such LoRA file or directory (write one with `workbench export`)")
    if path.is_dir() and (path / "model_index.json").is_file():
        src.pipeline_dir = str(path)
    elif _looks_like_hub_id(model):
        src.pipeline_dir = model
    elif path.is_dir() and any(path.glob("*lora*.safetensors")):
        base = _export_base(path) or "BASE_MODEL"
        raise EvalError(f"--model {model}: a LoRA without a pipeline; evaluate it as --model {base} --lora {model}")
    else:
        from workbench.export import ExportError, read_checkpoint, resolve_source

        if lora is not None:
            raise EvalError("--lora applies to a pipeline directory (--model DIR); a checkpoint or run id "
                            "already carries its fine-tune")
        try:
            ckpt_path, src.run = resolve_source(model, tracking_uri)
            src.trained = read_checkpoint(ckpt_path)
        except ExportError as e:
            raise EvalError(f"--model {e}") from None
        src.checkpoint, src.global_step = ckpt_path, src.trained.global_step
        src.base_model = base_model or src.trained.base_model
        try:
            check_model_source(src.base_model)
        except FileNotFoundError as e:
            hint = "" if base_model else " (the checkpoint's base model); pass --base-model if it moved"
            raise EvalError(f"{e}{hint}") from None
        return src
    if compare_base:
        src.base_model = base_model or (src.pipeline_dir if src.lora is not None else _export_base(path))
        if src.base_model is None:
            raise EvalError(f"--compare-base: {model} is a merged model with no recorded base; pass --base-model")
        try:
            check_model_source(src.base_model)
        except FileNotFoundError as e:
            raise EvalError(f"--base-model: {e}") from None
    return src


def _export_base(path: Path) -> str | None:
    """The base model recorded by ``workbench export`` in ``export.json``, if any."""
    try:
        return json.loads((path / "export.json").read_text()).get("base_model")
    except (OSError, ValueError, AttributeError):
        return None


# -- MLflow ----------------------------------------------------------------------------------------
def _log_to_mlflow(uri: str, src: ModelSource, suite: Suite, out: Path, results: dict, step: int) -> str:
    """Attach metrics, params and the out folder (artifact path ``eval/<suite>/``) to the training
    run, or to a new run in experiment ``workbench-eval``. Returns the run id."""
    from mlflow import MlflowClient
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    prefix = f"eval/{suite.name}"
    params = {f"{prefix}/{k}": v for k, v in suite.settings().items()}
    if src.run is not None:
        run_id, new = src.run.info.run_id, False
    else:
        exp = client.get_experiment_by_name(EXPERIMENT)
        exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
        name = f"{suite.name}-{Path(src.label).name or src.label}"
        tags = {"workbench.suite": suite.name, "workbench.model": src.label}
        run_id, new = client.create_run(exp_id, run_name=name, tags=tags).info.run_id, True
        params.update({"model": src.label, "lora": src.lora, "checkpoint": src.checkpoint,
                       "base_model": src.base_model})
    params = [Param(k, json.dumps(v) if isinstance(v, list) else str(v)) for k, v in params.items() if v is not None]
    try:
        client.log_batch(run_id, params=params)
    except MlflowException as e:
        # A run's params cannot change; an earlier evaluation with other settings logged them already.
        print(f"note: suite settings not logged as params of run {run_id} ({str(e).splitlines()[0][:200]}); "
              "they are in results.json", file=sys.stderr)
    for key, value in results["metrics"].items():
        client.log_metric(run_id, key, value, step=step)
    client.set_tag(run_id, f"workbench.eval.{suite.name}.out", str(out.resolve()))
    client.log_artifacts(run_id, str(out), prefix)
    if new:
        client.set_terminated(run_id)
    return run_id


# -- the whole job ---------------------------------------------------------------------------------
@dataclass
class EvalResult:
    suite: Suite
    out: Path
    scores: SuiteScores
    base_scores: SuiteScores | None
    results: dict
    run_id: str | None
    tracking_uri: str | None

    @property
    def metrics(self) -> dict[str, float]:
        return self.results["metrics"]


def _prepare_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvalError(f"--out {out}: exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)


def evaluate(suite: str | os.PathLike | Suite, model: str, *, lora: str | None = None, base_model: str | None = None,
             compare_base: bool = False, clip_model: str | None = None, fvd_detector: str | None = None,
             reference: str | None = None, out: str | os.PathLike | None = None,
             cache_dir: str | os.PathLike | None = None, tracking_uri: str | None = None,
             log_to_mlflow: bool = True, device: str | None = None, dtype: str | None = None,
             progress: bool = True, compile: bool = False) -> EvalResult:
    """Evaluate ``model`` on ``suite``: generate, score, write results, log to MLflow.

    ``model``: a diffusers pipeline directory (or hub id; ``lora`` adds a diffusers LoRA on top), a
    ``workbench fit`` checkpoint or run directory, or an MLflow run id. ``compare_base`` also
    evaluates the base model (``base_model``, else the checkpoint's, else the LoRA's pipeline
    directory) with the same seeds. ``clip_model``/``fvd_detector``/``reference`` override the
    suite's. ``out`` (default ``eval-results/<suite>-<time>``) must be new or empty. All inputs are
    checked before anything is generated (EvalError). Defaults: CUDA if available, bf16 there and
    fp32 on CPU. ``compile`` compiles the transformer blocks (regional ``torch.compile``) before
    generating.
    """
    import torch

    from workbench.tracking import resolve_tracking_uri

    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    suite = suite.with_overrides(clip_model=clip_model,
                                 fvd_detector=Path(fvd_detector).expanduser() if fvd_detector else None,
                                 reference=Path(reference).expanduser() if reference else None)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
        dtype or ("bf16" if device.type == "cuda" else "fp32")]
    uri = resolve_tracking_uri(tracking_uri)
    src = resolve_model(model, lora=lora, base_model=base_model, compare_base=compare_base, tracking_uri=uri)
    out = Path(out) if out is not None else Path("eval-results") / f"{suite.name}-{datetime.now():%Y%m%d-%H%M%S}"
    _prepare_out(out)
    try:
        metrics = load_suite_metrics(suite, cache_dir=cache_dir, device=device, fallback_dir=out.parent)
    except BaseException:
        if not any(out.iterdir()):
            out.rmdir()
        raise

    first_frames: dict[str, dict[int, torch.Tensor]] = {}
    runs = [("fine-tuned" if compare_base else "model", "videos", src.load)]
    if compare_base:
        runs.insert(0, ("base", "videos_base", src.load_base))
    all_scores = {}
    for label, folder, load in runs:
        pipe = load(device, torch_dtype, compile)
        store = first_frames.setdefault(label, {})
        batches = generate_suite_videos(pipe, suite, out / folder, progress=progress, desc=f"{suite.name} ({label})")
        all_scores[label] = score_videos(metrics, _tap_first_frames(batches, suite.seeds[0], store))
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    scores = all_scores["fine-tuned" if compare_base else "model"]
    base_scores = all_scores.get("base")

    if suite.path is not None:
        shutil.copyfile(suite.path, out / "suite.yaml")
    first_frame_grid({k: [v[i] for i in range(len(suite.prompts))] for k, v in first_frames.items()},
                     out / "grid.png")
    info = {"model": src.label, "lora": str(src.lora) if src.lora else None,
            "checkpoint": str(src.checkpoint) if src.checkpoint else None, "global_step": src.global_step,
            "base_model": src.base_model if compare_base or src.checkpoint else None,
            "run_id": src.run.info.run_id if src.run is not None else None,
            "reference_statistics": str(metrics.cache_path)}
    results = suite_results(suite, scores, base_scores, out=out, info=info)
    write_results(out, results)
    run_id = None
    if log_to_mlflow:
        run_id = _log_to_mlflow(uri, src, suite, out, results, step=src.global_step or 0)
        if results["run_id"] != run_id:
            results["run_id"] = run_id
            write_results(out, results)
    return EvalResult(suite, out, scores, base_scores, results, run_id, uri if log_to_mlflow else None)


# -- during training -------------------------------------------------------------------------------
def __getattr__(name: str):
    # SuiteEvaluation subclasses Lightning's Callback. It is built on first access, so importing this
    # module (every `workbench` command registers `eval`) does not import Lightning and torch.
    if name == "SuiteEvaluation":
        globals()[name] = cls = _suite_evaluation_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _suite_evaluation_class():
    import lightning as L
    import torch

    class SuiteEvaluation(L.Callback):
        """Evaluate a (small) suite at validation: the module's live pipeline, the same generation and
        scoring as ``workbench eval``; logs ``eval/clip_score`` and ``eval/fvd`` to the loggers at
        ``trainer.global_step`` (the step a checkpoint saved then records, so ``workbench eval`` of that
        checkpoint lands on the same step) and puts them in ``trainer.callback_metrics`` (monitorable).

        With several processes (DDP) each generates its share of the suite's videos and the metric
        states are reduced across them (torchmetrics' sync), so the numbers are those of one process;
        rank zero writes and logs the results. Not for strategies that shard the transformer. Inputs are checked and the reference statistics prepared in ``setup``, before
        training starts. Videos and results.json go to ``<run dir>/eval/<suite>/step_<N>/`` and the
        MLflow run's artifacts under the same path.

        Args:
            suite: the suite YAML.
            every_n_validations: evaluate on every n-th validation (1 = every one).
            clip_model: overrides the suite's CLIP model.
            fvd_detector: overrides the suite's I3D detector.
            reference: overrides the suite's reference video folder.
            cache_dir: where reference statistics are cached (default: next to the suite).
        """

        def __init__(self, suite: str, every_n_validations: int = 1, clip_model: str | None = None,
                     fvd_detector: str | None = None, reference: str | None = None, cache_dir: str | None = None):
            if every_n_validations < 1:
                raise ValueError(f"every_n_validations={every_n_validations}: must be >= 1")
            self.suite_path, self.every = suite, every_n_validations
            self.overrides = {"clip_model": clip_model, "fvd_detector": fvd_detector, "reference": reference}
            self.cache_dir = cache_dir
            self.metrics: SuiteMetrics | None = None
            self.last_scores: SuiteScores | None = None
            self._validations = 0

        def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
            if self.metrics is not None:
                return
            from workbench.lit.callbacks import run_dir

            o = self.overrides
            suite = load_suite(self.suite_path).with_overrides(
                clip_model=o["clip_model"], fvd_detector=Path(o["fvd_detector"]) if o["fvd_detector"] else None,
                reference=Path(o["reference"]) if o["reference"] else None)
            # Rank zero computes and caches the reference statistics; the others then read the cache.
            fallback = trainer.strategy.broadcast(str(run_dir(trainer) / "eval") if trainer.is_global_zero else None)
            if trainer.is_global_zero:
                self.metrics = load_suite_metrics(suite, cache_dir=self.cache_dir, device="cpu",
                                                  fallback_dir=Path(fallback))
            trainer.strategy.barrier("SuiteEvaluation.setup")
            if not trainer.is_global_zero:
                self.metrics = load_suite_metrics(suite, cache_dir=self.cache_dir, device="cpu",
                                                  fallback_dir=Path(fallback))

        def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
            if trainer.sanity_checking:
                return
            self._validations += 1
            if (self._validations - 1) % self.every:
                return
            self._evaluate(trainer, pl_module)
            trainer.strategy.barrier("SuiteEvaluation")

        def _evaluate(self, trainer: L.Trainer, pl_module) -> None:
            from workbench.lit.callbacks import run_dir
            from workbench.tracking import mlflow_logger

            suite, metrics = self.metrics.suite, self.metrics
            metrics.device = pl_module.device
            metrics.clip.to(pl_module.device)
            metrics.fvd.to(pl_module.device)
            step = f"step_{trainer.global_step:06d}"
            # rank zero's run directory, for every process's videos
            out = Path(trainer.strategy.broadcast(str(run_dir(trainer) / "eval" / suite.name / step)
                                                  if trainer.is_global_zero else None))
            # The live transformer in eval mode (restored after), with the VAE and T5 loaded if offloaded.
            with pl_module.sampling_pipeline() as pipe:
                batches = generate_suite_videos(pipe, suite, out / "videos",
                                                context=trainer.precision_plugin.forward_context, progress=False,
                                                rank=trainer.global_rank, world_size=trainer.world_size)
                scores = score_videos(metrics, batches)
            self.last_scores = scores
            if not trainer.is_global_zero:
                return
            results = suite_results(suite, scores, out=out, info={"global_step": trainer.global_step})
            write_results(out, results)
            values = {"eval/clip_score": scores.clip_score, "eval/fvd": scores.fvd}
            # Straight to the loggers: self.log at validation end would record global_step - 1.
            for lg in trainer.loggers:
                lg.log_metrics(values, step=trainer.global_step)
            # Also where ModelCheckpoint(monitor="eval/fvd") and EarlyStopping look.
            trainer.callback_metrics.update({k: torch.tensor(v) for k, v in values.items()})
            logger = mlflow_logger(trainer)
            if logger is not None:
                logger.log_artifact(out, f"eval/{suite.name}/{step}")  # through the outage-buffering logger

    SuiteEvaluation.__module__, SuiteEvaluation.__qualname__ = __name__, "SuiteEvaluation"
    return SuiteEvaluation


# -- CLI -------------------------------------------------------------------------------------------
def cmd_eval(ns: argparse.Namespace) -> int:
    from workbench.data.manifest import ManifestError

    try:
        result = evaluate(ns.suite, ns.model, lora=ns.lora, base_model=ns.base_model, compare_base=ns.compare_base,
                          clip_model=ns.clip_model, fvd_detector=ns.fvd_detector, reference=ns.reference,
                          out=ns.out, cache_dir=ns.cache_dir, tracking_uri=ns.tracking_uri,
                          log_to_mlflow=not ns.no_mlflow, device=ns.device, dtype=ns.dtype,
                          compile=ns.compile)
    except (EvalError, ManifestError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = result.metrics
    print(f"suite {result.suite.name}: {result.scores.num_videos} videos, "
          f"{result.scores.num_reference_videos} reference videos")
    for key in sorted(k for k in m if not k.startswith("eval/num_")):
        print(f"  {key} = {m[key]:.4f}")
    if result.results.get("fvd_note"):
        print(f"note: {result.results['fvd_note']}")
    print(f"results: {result.out / 'results.md'}")
    if result.run_id:
        print(f"MLflow: run {result.run_id} in {result.tracking_uri}, artifacts under eval/{result.suite.name}/")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``workbench eval`` on the top-level subparsers."""
    p = subparsers.add_parser(
        "eval",
        help="generate a suite's videos and score them (CLIP score, FVD), logged to MLflow",
        description=(
            "Generate the videos of an evaluation suite (evals/suites/*.yaml: prompts, seeds, frames, size, "
            "steps, guidance) with a model, save them as mp4, and score them: frame-averaged CLIP score against "
            "each prompt and FVD against the suite's real reference videos (statistics cached next to the suite). "
            "Writes results.json, results.md and grid.png to --out and logs everything to MLflow: on the training "
            "run for a checkpoint or run id (artifacts under eval/<suite>/), else on a new run in experiment "
            "workbench-eval. Every input is checked before generation starts. See evals/README.md."
        ),
    )
    p.add_argument("--suite", required=True, help="suite YAML (e.g. evals/suites/smoke.yaml)")
    p.add_argument("--model", required=True, metavar="PATH_OR_RUN",
                   help="a diffusers pipeline directory (base or merged export) or hub id, a .ckpt written by "
                        "`workbench fit` (or its run directory), or an MLflow run id")
    p.add_argument("--lora", help="a diffusers LoRA file or directory (from `workbench export`) to load on --model")
    p.add_argument("--base-model", help="base model for a checkpoint (when it moved) and for --compare-base")
    p.add_argument("--compare-base", action="store_true",
                   help="also evaluate the base model with the same seeds (metrics eval/*_base, "
                        "grid base | fine-tuned)")
    p.add_argument("--clip-model", help="CLIP hub id or local directory (overrides the suite's clip_model)")
    p.add_argument("--fvd-detector", help="StyleGAN-V i3d_torchscript.pt (overrides the suite's fvd_detector)")
    p.add_argument("--reference", help="reference video folder (overrides the suite's reference)")
    p.add_argument("--out", help="results folder, new or empty (default: eval-results/<suite>-<time>)")
    p.add_argument("--cache-dir", help="folder for cached reference statistics (default: <suite folder>/.fvd_cache)")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--no-mlflow", action="store_true", help="write results to --out only")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="model dtype (default: bf16 on cuda, fp32 on cpu)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer blocks before generating (pays off from a few videos "
                        "on; see docs/performance.md)")
    p.set_defaults(func=cmd_eval)
    return p
