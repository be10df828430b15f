"""Clips for the VAE: frames at a target fps by presentation time, resize and crop.

Decoding (decord, and PyAV for what decord cannot read) is :mod:`workbench.data.decoding`; ``probe``,
``VideoInfo``, ``VideoError`` and ``UnsupportedCodecError`` are re-exported here.

Temporal policy: 4k+1 frames at the target fps from the centre of the clip, so a clip and its cache entry
always agree. It is a policy in seconds (:func:`frame_times_at_fps`): sample times 1/fps apart, centred
between the first and the last frame's presentation times, each taking the frame presented nearest to it.
On a constant-frame-rate clip that is :func:`frame_indices_at_fps`, the frame-number arithmetic training
has always used, and it is computed by it, so such clips give exactly the frames they gave before. A
variable-frame-rate clip takes its frames by their real timestamps. A clip range (a manifest range row's
``start``/``end``) applies the same policy to the frames presented within it, as if they were the whole clip.

Resize + crop policy: scale the clip so it covers the target size while keeping its aspect ratio
(bilinear, antialiased), then crop the centre.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.data.decoding import UnsupportedCodecError, VideoError, VideoInfo, probe, read_frames

if TYPE_CHECKING:
    import torch

__all__ = ["UnsupportedCodecError", "VideoError", "VideoInfo", "frame_indices_at_fps", "frame_numbers_at_fps",
           "frame_times_at_fps", "frames_in_range", "load_clip", "range_info", "probe", "resize_crop"]

RANGE_SLACK_S = 5e-4  # a frame within half a millisecond of a range's ends is in it (the cache key's precision)


def frame_indices_at_fps(num_src: int, src_fps: float, num_frames: int, target_fps: float | None) -> list[int]:
    """Indices of ``num_frames`` frames at ``target_fps`` from the centre of a constant-rate clip.

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
    # Half rounds up: Python's round() rounds half to even, which spaced frames unevenly whenever the clip's
    # centre fell between two frames (24 -> 8 fps gave gaps of 2, 4, 2, 4 frames instead of 3).
    return [min(num_src - 1, math.floor(start + i * step + 0.5)) for i in range(num_frames)]


def frames_in_range(info: VideoInfo, start: float, end: float) -> tuple[int, int]:
    """(first frame number, count) of the frames whose presentation times lie in [start, end] seconds."""
    times = info.frame_times
    first = int(np.searchsorted(times, start - RANGE_SLACK_S, side="left"))
    stop = int(np.searchsorted(times, end + RANGE_SLACK_S, side="right"))
    return first, max(0, stop - first)


def range_info(info: VideoInfo, first: int, count: int) -> VideoInfo:
    """``info`` as if the clip were only its frames ``first .. first + count - 1`` (times from the first of them)."""
    times = info.frame_times[first:first + count]
    times = times - times[0] if count else times
    fps = info.fps
    if info.vfr and count > 1 and times[-1] > 0:  # a VFR clip's rate is its mean rate (probe's rule), here the range's
        fps = (count - 1) / float(times[-1])
    return dataclasses.replace(info, num_frames=count, fps=fps, frame_times=times)


def frame_numbers_at_fps(info: VideoInfo, num_frames: int, target_fps: float | None, start: float | None = None,
                         end: float | None = None) -> list[int]:
    """The frames of ``info`` (numbers in display order) that :func:`_frame_numbers` takes, from the whole clip or,
    with ``start``/``end``, from the frames presented within [start, end] seconds only (the same policy applied
    to them as to a clip of their own). Raises VideoError when the clip (or range) is too short."""
    if start is None and end is None:
        return _frame_numbers(info, num_frames, target_fps)
    first, count = frames_in_range(info, start, end)
    try:
        numbers = _frame_numbers(range_info(info, first, count), num_frames, target_fps)
    except VideoError as e:
        past = (f"; the file ends at {float(info.frame_times[-1]):.3f} s" if len(info.frame_times) and
                end > float(info.frame_times[-1]) + RANGE_SLACK_S else "")
        raise VideoError(f"too short: range {start:.3f}-{end:.3f} s has "
                         f"{str(e).removeprefix('too short: ')}{past}") from None
    return [first + k for k in numbers]


def _frame_numbers(info: VideoInfo, num_frames: int, target_fps: float | None) -> list[int]:
    """The frames (numbers in display order) a clip gives: ``num_frames`` at ``target_fps`` from its centre.

    Sample times are ``1 / target_fps`` apart and centred between the first and the last frame's
    presentation times; each takes the frame whose presentation time is nearest (the earlier of two at
    the same distance). On a constant-rate clip the frames sit at ``k / fps`` and the nearest frame is
    ``floor(time * fps + 0.5)``: :func:`frame_indices_at_fps` computes exactly that, and is used for such
    clips. A VFR clip uses its real
    timestamps. ``target_fps=None`` takes consecutive frames from the centre. The length rule is
    :func:`frame_indices_at_fps`'s, with a VFR clip's mean rate: the sample times must span less than
    ``num_frames / fps`` seconds. Raises VideoError when the clip is too short.
    """
    indices = frame_indices_at_fps(info.num_frames, info.fps, num_frames, target_fps)
    if not info.vfr or not target_fps:
        return indices
    times = info.frame_times
    span = (num_frames - 1) / target_fps
    wanted = (float(times[-1]) - span) / 2.0 + np.arange(num_frames) / target_fps
    after = np.clip(np.searchsorted(times, wanted, side="left"), 1, len(times) - 1)
    before = after - 1
    nearer_after = np.abs(times[after] - wanted) < np.abs(wanted - times[before])
    return np.where(nearer_after, after, before).tolist()


def frame_times_at_fps(info: VideoInfo, num_frames: int, target_fps: float | None, start: float | None = None,
                       end: float | None = None) -> list[float]:
    """Times (s from the first frame) at which :func:`~workbench.data.decoding.read_frames` returns the
    frames of :func:`frame_numbers_at_fps`: the middle of the time each is shown, so rounding in the
    container's timestamps cannot tip a time onto a neighbouring frame."""
    return [info.display_midpoint(k) for k in frame_numbers_at_fps(info, num_frames, target_fps, start, end)]


def resize_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(F, C, h, w) float -> (F, C, height, width): cover-resize then centre crop."""
    import torch.nn.functional as F  # imported here: the `data check` worker processes never need torch

    _, _, h, w = frames.shape
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    if (new_h, new_w) != (h, w):
        frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return frames[:, :, top : top + height, left : left + width]


def load_clip(path: str | Path, num_frames: int, height: int, width: int, target_fps: float | None,
              start: float | None = None, end: float | None = None) -> torch.Tensor:
    """Decode a clip (or its range [start, end] s) into the VAE's input: (C, F, H, W) float32 in [-1, 1].
    Raises VideoError."""
    import torch

    try:
        info = probe(path)
        frames = read_frames(path, frame_times_at_fps(info, num_frames, target_fps, start, end))
    except VideoError:
        raise
    except Exception as e:  # a decoder error the decoding module did not foresee: still a bad video
        raise VideoError(f"cannot decode: {(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}") from e
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # F, C, h, w
    video = resize_crop(video, height, width)
    return (video / 127.5 - 1.0).permute(1, 0, 2, 3).contiguous()
