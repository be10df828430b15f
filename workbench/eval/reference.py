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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.common import file_sha256
from workbench.eval.suite import EvalError, Suite

CACHE_DIR_NAME = ".fvd_cache"
# StyleGAN-V's i3d_torchscript.pt, as several public repositories pin it (51,235,320 bytes).
STYLEGAN_V_I3D_SHA256 = "bec6519f66ea534e953026b4ae2c65553c17bf105611c746d904657e5860a5e2"
STYLEGAN_V_SEED = 0  # StyleGAN-V draws each real clip's 16-frame offset unseeded; seeded here, so it repeats


@dataclass
class SuiteMetrics:
    """Loaded CLIP model, I3D detector and the real videos' FVD statistics of one suite, and what they are
    (``provenance``: the detector's kind and sha256, the CLIP model's revision or weight hash)."""

    suite: Suite
    clip: Any  # workbench.metrics.VideoCLIPScore
    fvd: Any  # workbench.metrics.FrechetVideoDistance with the cached reference statistics
    reference_videos: int
    cache_path: Path
    device: Any  # torch.device
    provenance: dict | None = None
    per_video: list = field(default_factory=list)  # the suite's per-video metrics (workbench.eval.metrics)

    def reset(self) -> None:
        """Empty every metric's state (the reference statistics stay)."""
        for metric in (self.clip, self.fvd, *self.per_video):
            metric.reset()

    def to(self, device) -> None:
        """Every metric on ``device`` (the training callback scores on the training device)."""
        import torch

        self.device = torch.device(device)
        for metric in (self.clip, self.fvd, *self.per_video):
            metric.to(self.device)


def _reference_entries(suite: Suite, root: Path):
    """The reference clips of ``root``, every one checked (inside the folder, present, decodable, long enough
    for the suite) before any is used: all problems are reported at once, in one EvalError."""
    from workbench.data.decoding import probe
    from workbench.data.manifest import ManifestError, PathOutsideRoot, read_manifest
    from workbench.data.video import VideoError, frame_numbers_at_fps
    from workbench.metrics.fvd import PUBLISHED_NUM_VIDEOS

    try:
        entries = read_manifest(root)
    except ManifestError as e:
        raise EvalError(f"reference videos: {e}") from None
    problems = []
    for e in entries:
        try:
            path = e.path(root)
            if not path.is_file():
                problems.append(f"{e.file_name} ({e.where}): does not exist")
                continue
            if suite.protocol == "workbench":  # stylegan-v takes 16 native frames and leaves shorter clips out
                frame_numbers_at_fps(probe(path), suite.num_frames, suite.fps)
            else:
                probe(path)
        except PathOutsideRoot as err:
            problems.append(str(err))
        except VideoError as err:
            problems.append(f"{e.file_name} ({e.where}): {err}")
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise EvalError(f"reference videos in {root}: {len(problems)} of {len(entries)} unusable ({shown}). Every "
                        f"reference clip must give {suite.num_frames} frames at {suite.fps:g} fps: remove them from "
                        f"the manifest or change the suite (`workbench data check {root} --num-frames "
                        f"{suite.num_frames} --fps {suite.fps:g}` reports them with fixes)")
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
           "i3d_frames": I3D_NUM_FRAMES, "protocol": suite.protocol, "detector_kind": suite.fvd_detector_kind,
           "sampling": 2}  # 2: frames by presentation time, half-frame ties rounded up
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def default_cache_dir(suite: Suite, fallback: Path) -> Path:
    """``<suite folder>/.fvd_cache`` when that folder is writable, else ``<fallback>/.fvd_cache``."""
    if suite.path is not None and os.access(suite.path.parent, os.W_OK):
        return suite.path.parent / CACHE_DIR_NAME
    return fallback / CACHE_DIR_NAME


def _stylegan_v_clips(root: Path, entries) -> Iterator:
    """Real clips as StyleGAN-V's FVD takes them: 16 consecutive frames at the clip's native frame rate from a
    random offset (seeded per clip by its position and STYLEGAN_V_SEED), at the clip's own resolution (the
    detector resizes to 224), one clip a batch (clips may differ in size). Clips shorter than 16 frames are
    left out, as StyleGAN-V does."""
    import random

    import torch

    from workbench.data.decoding import probe, read_frames
    from workbench.metrics.fvd import I3D_NUM_FRAMES

    for i, e in enumerate(entries):
        info = probe(e.path(root))
        if info.num_frames < I3D_NUM_FRAMES:
            continue
        start = random.Random(STYLEGAN_V_SEED * 1_000_003 + i).randint(0, info.num_frames - I3D_NUM_FRAMES)
        times = [info.display_midpoint(k) for k in range(start, start + I3D_NUM_FRAMES)]
        frames = torch.from_numpy(read_frames(e.path(root), times)).permute(0, 3, 1, 2)  # (F, C, H, W) uint8
        yield frames.unsqueeze(0)


def _reference_batches(suite: Suite, root: Path, entries, batch_size: int = 8) -> Iterator:
    """Decoded reference clips, (B, F, C, H, W) in [0, 1], at the suite's frames/size/fps (protocol
    ``workbench``), or StyleGAN-V's sampling (``stylegan-v``, uint8 clips, see ``_stylegan_v_clips``)."""
    import torch

    if suite.protocol == "stylegan-v":
        yield from _stylegan_v_clips(root, entries)
        return

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
    entries = _reference_entries(suite, root)
    if not suite.clip_model:
        raise EvalError(f"suite {suite.name}: no clip_model; set it in the suite or pass --clip-model")
    try:
        # Default sync_on_compute: with several processes (SuiteEvaluation under DDP) compute() gathers
        # every process's states; in one process it is a no-op.
        clip = VideoCLIPScore(suite.clip_model)
    except FileNotFoundError as e:
        raise EvalError(f"CLIP model: {e}") from None

    sha = file_sha256(detector)
    if suite.protocol == "stylegan-v" and sha != STYLEGAN_V_I3D_SHA256:
        raise EvalError(f"protocol: stylegan-v needs StyleGAN-V's i3d_torchscript.pt (sha256 {STYLEGAN_V_I3D_SHA256[:16]}"
                        f"...), but {detector} has sha256 {sha[:16]}...: use the original file (evals/README.md, "
                        "\"Offline set-up\") or protocol: workbench, whose numbers are relative to the suite")
    kind = suite.fvd_detector_kind
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(suite, Path(fallback_dir))
    cache_path = cache_dir / f"fvd-ref-{suite.name}-{reference_cache_key(suite, root, entries, sha)}.safetensors"
    try:
        stats = reference_statistics(detector, _reference_batches(suite, root, entries), cache_path, device=device,
                                     detector_kind=kind)
        fvd = FrechetVideoDistance(detector, reference=stats, detector_kind=kind)
    except ValueError as e:  # a cache from another detector, a detector with the wrong output
        raise EvalError(f"FVD: {e}") from None
    device = torch.device(device)
    clip.to(device)
    fvd.to(device)
    provenance = {"fvd_detector_kind": kind, "fvd_detector_sha256": sha, "fvd_protocol": suite.protocol,
                  "clip_model_revision": clip_revision(suite.clip_model)}
    from workbench.eval.metrics import load_metrics

    per_video = load_metrics(suite, clip, device)
    return SuiteMetrics(suite, clip, fvd, stats.num_samples, cache_path, device, provenance, per_video)


def clip_revision(model: str) -> str:
    """What identifies the CLIP weights used: the sha256 of a local directory's weight file, or the hub
    revision (commit) the local Hugging Face cache holds for a hub id."""
    local = Path(model)
    weights = sorted(local.glob("*.safetensors")) if local.is_dir() else []
    if weights:
        return "sha256:" + file_sha256(weights[0])
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if repo.repo_id == model and repo.revisions:
                return "revision:" + max(repo.revisions, key=lambda r: r.last_modified).commit_hash
    except Exception:  # noqa: BLE001 - no cache, unreadable cache: say so rather than fail an evaluation
        pass
    return f"hub:{model} (revision not found in the local cache)"
