"""Datasets of the shapes world written to disk: mp4 clips, ``metadata.jsonl`` and a dataset card.

``make_sample_dataset`` is the bundled sample dataset (``workbench data sample``); ``write_shapes_dataset``
writes any set of scenes (workbench.shapes.world), e.g. a domain held out of the miniature's pretraining.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from workbench.common import write_video
from workbench.shapes.world import DOMAINS, Scene, SceneSampler, render

DATASET_CARD = """---
license: cc0-1.0
task_categories: [text-to-video]
size_categories: [n<1K]
---
# {title}

Synthetic clips of the shapes world (workbench.shapes.world, docs/shapes-world.md): one coloured shape
moving in a straight line over a dark background, {n} clips of {frames} frames at {fps:g} fps, {width}x{height}.
Captions name the colour, the shape and the direction of motion. Colours: {colours}.

Layout: `metadata.jsonl` with `file_name` and `caption` (see datasets/README.md).
{use}
"""


SAMPLE_CRF = 10  # the sample clips' quality (what imageio's quality=8 meant when they were written through it)


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """A shapes-world clip (F, H, W, 3) uint8 as H.264 mp4: the package's one writer (in-process, atomic)."""
    write_video(path, frames, fps, crf=SAMPLE_CRF)


def write_shapes_dataset(out_dir: str | Path, scenes: list[Scene], *, num_frames: int, fps: float, height: int,
                         width: int, title: str = "shapes-world clips", use: str = "", workers: int = 8) -> Path:
    """Render ``scenes`` as mp4 clips into ``out_dir/videos`` with ``metadata.jsonl`` and ``README.md``."""
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    names = [f"videos/{i:05d}_{s.colour}_{s.shape}.mp4" for i, s in enumerate(scenes)]

    def one(i: int) -> None:
        write_mp4(out / names[i], render(scenes[i], num_frames, height, width), fps)

    with ThreadPoolExecutor(max(1, workers)) as pool:  # in-process encodes: no subprocess from a thread
        list(pool.map(one, range(len(scenes))))
    (out / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "caption": s.caption}) + "\n"
                                                for n, s in zip(names, scenes)))
    colours = ", ".join(sorted({s.colour for s in scenes}))
    (out / "README.md").write_text(DATASET_CARD.format(title=title, n=len(scenes), frames=num_frames, fps=fps,
                                                       width=width, height=height, colours=colours, use=use))
    return out


def make_sample_dataset(out_dir: str | Path, num_clips: int = 8, num_frames: int = 24, fps: float = 16.0,
                        height: int = 64, width: int = 96, domain: str = "all", seed: int = 0) -> Path:
    """The bundled sample dataset: ``num_clips`` clips of the shapes world's ``domain`` (``all``, ``pretrain``
    or ``held_out``); returns ``out_dir``."""
    if domain not in DOMAINS:
        raise ValueError(f"domain {domain!r}: one of {', '.join(DOMAINS)}")
    scenes = SceneSampler(colours=DOMAINS[domain], seed=seed).scenes(num_clips)
    return write_shapes_dataset(out_dir, scenes, num_frames=num_frames, fps=fps, height=height, width=width,
                                title="workbench sample dataset",
                                use="Intended use: smoke tests and the CPU quickstart. Not for judging real model "
                                    "quality.")
