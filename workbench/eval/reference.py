"""The metric networks of a suite and the real videos' FVD statistics, loaded and checked before generation.

The real-video statistics are cached as ``<cache_dir>/fvd-ref-<suite>-<key>.safetensors``; the key hashes
the detector file, the reference folder's path and files (names, sizes, mtimes) and the suite's frames,
size and fps, so any change recomputes them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.common import file_sha256
from workbench.eval.suite import EvalError, Suite

CACHE_DIR_NAME = ".fvd_cache"


@dataclass
class SuiteMetrics:
    """Loaded CLIP model, I3D detector and the real videos' FVD statistics of one suite."""

    suite: Suite
    clip: Any  # workbench.metrics.VideoCLIPScore
    fvd: Any  # workbench.metrics.FrechetVideoDistance with the cached reference statistics
    reference_videos: int
    cache_path: Path
    device: Any  # torch.device


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


def _reference_batches(suite: Suite, root: Path, entries, batch_size: int = 8) -> Iterator:
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
                       device="cpu", fallback_dir: str | os.PathLike = ".") -> SuiteMetrics:
    """Check the suite's metric inputs and load them: the CLIP model, the I3D detector, the reference
    statistics (from the cache, or decoded and computed, then cached).

    The cache file is ``<cache_dir>/fvd-ref-<suite>-<key>.safetensors``; the key hashes the detector
    file, the reference folder's path and files (names, sizes, mtimes) and the suite's frames, size
    and fps, so any change recomputes it. ``cache_dir`` defaults to ``default_cache_dir``.
    Raises EvalError (or FileNotFoundError from the metric loaders) for any bad input.
    """
    import torch

    from workbench.metrics import FrechetVideoDistance, VideoCLIPScore, reference_statistics

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
