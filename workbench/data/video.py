"""Video decoding (decord), frame sampling at a target fps, resize and crop.

Resize + crop policy: scale the clip so it covers the target size while keeping its aspect
ratio (bilinear, antialiased), then crop the centre. Temporal policy: 4k+1 frames at the target
fps, taken from the centre of the clip, so a clip and its cache entry always agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F



class VideoError(ValueError):
    """A video that cannot be used, with the reason in the message."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def frame_indices_at_fps(num_src: int, src_fps: float, num_frames: int, target_fps: float | None) -> list[int]:
    """Indices of ``num_frames`` frames at ``target_fps`` from the centre of a clip.

    ``target_fps=None`` takes consecutive frames. Raises VideoError when the clip is too short.
    """
    step = 1.0 if not target_fps else src_fps / target_fps
    span = (num_frames - 1) * step  # distance between first and last sampled frame, in source frames
    if num_src < 1 or math.floor(span) + 1 > num_src:
        need = (num_frames - 1) / target_fps if target_fps else num_frames / max(src_fps, 1e-9)
        have = num_src / src_fps if src_fps else 0.0
        raise VideoError(
            f"too short: {num_src} frames ({have:.2f} s at {src_fps:.3g} fps); "
            f"{num_frames} frames at {target_fps or src_fps:.3g} fps need {need:.2f} s"
        )
    start = (num_src - 1 - span) / 2.0
    return [min(num_src - 1, int(round(start + i * step))) for i in range(num_frames)]


def probe(path: str | Path) -> VideoInfo:
    """Frame count, fps and size without decoding frames."""
    reader = _open(path)
    h, w = reader[0].shape[:2] if len(reader) else (0, 0)
    return VideoInfo(len(reader), float(reader.get_avg_fps()), int(h), int(w))


def _open(path: str | Path):
    import decord  # imported here: decord is only needed when videos are read

    path = Path(path)
    if not path.is_file():
        raise VideoError("file not found")
    if path.stat().st_size == 0:
        raise VideoError("zero-length file")
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # decord raises its own DECORDError or RuntimeError for bad files
        raise VideoError(f"cannot decode: {str(e).splitlines()[0][:200]}") from e


def resize_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(F, C, h, w) float -> (F, C, height, width): cover-resize then centre crop."""
    _, _, h, w = frames.shape
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    if (new_h, new_w) != (h, w):
        frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return frames[:, :, top : top + height, left : left + width]


def load_clip(path: str | Path, num_frames: int, height: int, width: int, target_fps: float | None) -> torch.Tensor:
    """Decode a clip into the VAE's input: (C, F, H, W) float32 in [-1, 1]."""
    reader = _open(path)
    try:
        indices = frame_indices_at_fps(len(reader), float(reader.get_avg_fps()), num_frames, target_fps)
        frames = reader.get_batch(indices).asnumpy()
    except VideoError:
        raise
    except Exception as e:
        raise VideoError(f"cannot decode: {str(e).splitlines()[0][:200]}") from e
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # F, C, h, w
    video = resize_crop(video, height, width)
    return (video / 127.5 - 1.0).permute(1, 0, 2, 3).contiguous()
