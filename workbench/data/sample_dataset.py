"""The bundled sample dataset: small captioned clips of coloured shapes moving in one direction.

Each caption says what moves (colour, shape, direction), so a fine-tune that learns the data is
measurable: its samples should move the right thing the right way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 240), "yellow": (240, 220, 40)}
SHAPES = ("circle", "square")
DIRECTIONS = {"left to right": (1, 0), "right to left": (-1, 0), "top to bottom": (0, 1), "bottom to top": (0, -1)}

DATASET_CARD = """---
license: cc0-1.0
task_categories: [text-to-video]
size_categories: [n<1K]
---
# workbench sample dataset

Synthetic clips made by `workbench data sample` (workbench.data.sample): one coloured shape
moving in a straight line over a dark background, {n} clips of {frames} frames at {fps} fps,
{width}x{height}. Captions name the colour, the shape and the direction of motion.

Layout: `metadata.jsonl` with `file_name` and `caption` (see datasets/README.md).
Intended use: smoke tests and the CPU quickstart. Not for judging real model quality.
"""


def render_clip(colour, shape: str, direction, num_frames: int, height: int, width: int) -> np.ndarray:
    """(F, H, W, 3) uint8 frames of one shape crossing the frame."""
    dx, dy = direction
    radius = max(3, min(height, width) // 6)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    frames[:] = (12, 12, 20)
    for i in range(num_frames):
        p = i / max(1, num_frames - 1)
        cx = width / 2 if dx == 0 else (radius + p * (width - 2 * radius) if dx > 0 else width - radius - p * (width - 2 * radius))
        cy = height / 2 if dy == 0 else (radius + p * (height - 2 * radius) if dy > 0 else height - radius - p * (height - 2 * radius))
        if shape == "circle":
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
        else:
            mask = (np.abs(xx - cx) <= radius) & (np.abs(yy - cy) <= radius)
        frames[i][mask] = colour
    return frames


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """H.264 mp4 through imageio-ffmpeg (its bundled ffmpeg)."""
    import imageio.v2 as imageio

    with imageio.get_writer(str(path), fps=fps, codec="libx264", quality=8, macro_block_size=1,
                            ffmpeg_log_level="error", output_params=["-pix_fmt", "yuv420p"]) as w:
        for frame in frames:
            w.append_data(frame)


def make_sample_dataset(out_dir: str | Path, num_clips: int = 8, num_frames: int = 24, fps: float = 16.0,
                        height: int = 64, width: int = 96) -> Path:
    """Write ``num_clips`` captioned clips and ``metadata.jsonl`` into ``out_dir``; returns it."""
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    colours, directions = list(COLOURS.items()), list(DIRECTIONS.items())
    rows = []
    for i in range(num_clips):
        # vary colour, shape and direction together so every few clips cover them all
        cname, colour = colours[i % len(colours)]
        shape = SHAPES[(i // len(colours)) % len(SHAPES)]
        dname, direction = directions[(i + i // len(colours)) % len(directions)]
        name = f"videos/{i:03d}_{cname}_{shape}.mp4"
        write_mp4(out / name, render_clip(colour, shape, direction, num_frames, height, width), fps)
        rows.append({"file_name": name, "caption": f"a {cname} {shape} moving from {dname} on a dark background"})
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "README.md").write_text(
        DATASET_CARD.format(n=num_clips, frames=num_frames, fps=fps, width=width, height=height)
    )
    return out
