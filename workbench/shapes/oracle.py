"""The oracle of the shapes world: read colour, shape and direction back from a video's own pixels.

No learned network is involved, so the oracle cannot share a model's mistakes:

* foreground: pixels farther than ``FOREGROUND_DISTANCE`` (RGB, 0-255) from the background colour;
* colour: the median foreground colour, named by the nearest colour of the world's palette;
* shape: the foreground's fill ratio of its bounding box, per frame, median over frames (circle
  pi/4 = 0.79, square 1.0, upward triangle 0.5); frames where the shape touches the border are left
  out (a clipped shape fills its box differently);
* direction: the foreground centroid's track, fitted by least squares; the axis of the larger
  displacement and its sign name the direction. A track that moves less than ``MIN_TRAVEL`` of the
  frame is ``none`` (nothing moves), which matches no prompt.

Videos are (F, C, H, W) float in [0, 1] or uint8, the workbench convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.eval.oracles import Oracle, PromptAccuracy
from workbench.eval.oracles import accuracy as prompt_accuracy_of
from workbench.eval.oracles import check_video as oracle_check
from workbench.shapes.world import BACKGROUND, COLOURS, DIRECTIONS, parse_caption

FOREGROUND_DISTANCE = 60.0
MIN_PIXELS = 4  # fewer foreground pixels than this: no object in the frame
MIN_TRAVEL = 0.1  # of the frame's side, first to last frame
ATTRIBUTES = ("colour", "shape", "direction")


@dataclass(frozen=True)
class Reading:
    """What the oracle sees in one video (``none`` where it sees nothing)."""

    colour: str
    shape: str
    direction: str

    def as_dict(self) -> dict[str, str]:
        return {"colour": self.colour, "shape": self.shape, "direction": self.direction}


def _uint8_frames(video) -> np.ndarray:
    """(F, H, W, 3) uint8 from (F, C, H, W) float in [0, 1] or uint8 (tensor or array)."""
    arr = video.detach().cpu().numpy() if hasattr(video, "detach") else np.asarray(video)
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"video must be (F, 3, H, W), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    return arr.transpose(0, 2, 3, 1)


def _shape_from_fill(fill: float) -> str:
    if fill > 0.9:
        return "square"
    if fill > 0.64:
        return "circle"
    return "triangle"


def read_video(video) -> Reading:
    """The oracle's reading of one video (F, C, H, W)."""
    frames = _uint8_frames(video).astype(np.float32)
    f, h, w, _ = frames.shape
    distance = np.linalg.norm(frames - np.array(BACKGROUND, np.float32), axis=-1)
    masks = distance > FOREGROUND_DISTANCE
    counts = masks.reshape(f, -1).sum(axis=1)
    present = counts >= MIN_PIXELS
    if not present.any():
        return Reading("none", "none", "none")

    fg = frames[masks]
    median = np.median(fg, axis=0)
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], np.float32)
    colour = names[int(np.argmin(np.linalg.norm(palette - median, axis=1)))]

    fills, centroids, times = [], [], []
    for i in np.flatnonzero(present):
        ys, xs = np.nonzero(masks[i])
        centroids.append((xs.mean() / w, ys.mean() / h))
        times.append(i)
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        if y0 > 0 and x0 > 0 and y1 < h - 1 and x1 < w - 1:
            fills.append(counts[i] / ((y1 - y0 + 1) * (x1 - x0 + 1)))
    shape = _shape_from_fill(float(np.median(fills))) if fills else "none"

    direction = "none"
    if len(times) >= 2:
        t = np.array(times, np.float64)
        c = np.array(centroids, np.float64)
        slope = np.polyfit(t, c, 1)[0] * (f - 1)  # displacement over the whole clip, per axis
        axis = int(np.argmax(np.abs(slope)))
        if abs(slope[axis]) >= MIN_TRAVEL:
            step = [0, 0]
            step[axis] = int(np.sign(slope[axis]))
            direction = next(name for name, d in DIRECTIONS.items() if list(d) == step)
    return Reading(colour, shape, direction)


def _reading(video) -> dict:
    return read_video(video).as_dict()


# The shapes world's oracle, found by evaluation through the ``workbench.oracles`` entry point (pyproject.toml).
SHAPES_ORACLE = Oracle(name="shapes", attributes=ATTRIBUTES, parse_prompt=parse_caption, read_video=_reading,
                       prompt_help="one colour, one shape, one direction of workbench/shapes/world.py")


def check_video(video, prompt: str) -> dict | None:
    """What the oracle reads in ``video`` and, per attribute, whether it is what ``prompt`` names
    (``all``: every attribute right). None when the prompt is not a caption of the shapes world."""
    return oracle_check(SHAPES_ORACLE, video, prompt)


def accuracy(checks: list[dict | None], prompts: list[str]) -> PromptAccuracy:
    """Share of checked videos (``check_video`` results, None skipped) whose attribute is right."""
    return prompt_accuracy_of(checks, prompts, ATTRIBUTES)


def prompt_accuracy(videos, prompts: list[str]) -> PromptAccuracy:
    """``accuracy`` of ``videos`` (each (F, C, H, W)) against their ``prompts``."""
    prompts = list(prompts)
    return accuracy([check_video(v, p) for v, p in zip(videos, prompts)], prompts)
