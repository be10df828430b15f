"""The package's one video writer (workbench.common.write_video): in-process, atomic, safe from threads.

The sample-data writer used to start ffmpeg from 8 threads through imageio-ffmpeg (``preexec_fn=os.setpgrp``,
which Python documents as unsafe with threads); a forked child hung before ``exec`` and stalled a test run for
25 minutes. These tests would hang (or fail on the subprocess guard) with that writer.
"""

from __future__ import annotations

import ast
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from workbench.common import read_video, write_video
from workbench.shapes.sample_dataset import write_shapes_dataset
from workbench.shapes.world import SceneSampler

PACKAGE = Path(__file__).resolve().parents[2] / "workbench"


@pytest.fixture
def no_subprocess(monkeypatch):
    """Any subprocess started while writing fails the test (the writer must stay in-process)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a video write started a subprocess: {args[:1]}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def _frames(seed: int, n: int = 9, h: int = 32, w: int = 48) -> np.ndarray:
    colour = np.random.default_rng(seed).integers(40, 215, size=3)
    ramp = np.linspace(-30, 30, w)[None, :, None]  # smooth: 4:2:0 chroma keeps it
    base = np.broadcast_to(colour + ramp, (h, w, 3)).clip(0, 255).astype(np.uint8)
    return np.repeat(base[None], n, axis=0)  # one picture per video, told apart by its colour


@pytest.mark.timeout(120)
def test_concurrent_writes_repeated_twenty_times(tmp_path, no_subprocess):
    """16 threads x 20 rounds of writes (the same paths rewritten each round): every file complete and decodable,
    no temporary file left, no subprocess."""
    frames = [_frames(i) for i in range(16)]

    def one(i: int, r: int) -> Path:
        return write_video(tmp_path / f"{i:02d}.mp4", frames[i], 8.0)

    with ThreadPoolExecutor(16) as pool:
        for r in range(20):
            paths = list(pool.map(lambda i: one(i, r), range(16)))
    for i, path in enumerate(paths):
        video = read_video(path)
        assert video.shape == (9, 32, 48, 3)
        assert np.abs(video.astype(int) - frames[i].astype(int)).mean() < 8  # the same picture, lossy
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i:02d}.mp4" for i in range(16)]


@pytest.mark.timeout(120)
def test_sample_dataset_writer_threads_never_fork(tmp_path, no_subprocess):
    scenes = SceneSampler(seed=0).scenes(12)
    out = write_shapes_dataset(tmp_path / "d", scenes, num_frames=9, fps=8.0, height=32, width=48, workers=8)
    videos = sorted((out / "videos").glob("*.mp4"))
    assert len(videos) == 12 and all(read_video(v).shape == (9, 32, 48, 3) for v in videos)


def test_writer_inputs_and_refusals(tmp_path):
    import torch

    as_float = _frames(1).astype(np.float32) / 255.0
    as_torch = torch.from_numpy(as_float).permute(0, 3, 1, 2)
    a = read_video(write_video(tmp_path / "a.mp4", _frames(1), 8))
    b = read_video(write_video(tmp_path / "b.mp4", as_float, 8))
    c = read_video(write_video(tmp_path / "c.mp4", as_torch, 8))
    assert np.array_equal(a, b) and np.array_equal(a, c)  # uint8, float [0, 1] and torch (F, C, H, W) alike
    with pytest.raises(ValueError, match="even width and height"):
        write_video(tmp_path / "odd.mp4", np.zeros((3, 31, 48, 3), np.uint8), 8)
    with pytest.raises(ValueError, match=r"\(frames, height, width, 3\)"):
        write_video(tmp_path / "bad.mp4", np.zeros((31, 48, 3), np.uint8), 8)
    assert not (tmp_path / "odd.mp4").exists() and not list(tmp_path.glob(".*.tmp"))


def _writes_video(node: ast.AST) -> str | None:
    """What a call writes video through, if it does: diffusers' export_to_video, imageio's writers, or av.open
    in a write mode."""
    if not isinstance(node, ast.Call):
        return None
    name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
    if name in {"export_to_video", "get_writer", "mimwrite", "mimsave", "write_frames"}:
        return name
    if name == "open" and isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "av":
        modes = [k.value for k in node.keywords if k.arg == "mode"] + node.args[1:2]
        if any(isinstance(m, ast.Constant) and "w" in str(m.value) for m in modes):
            return "av.open(mode='w')"
    return None


def test_one_video_writer_in_the_package():
    """Every mp4 the package writes goes through workbench.common.write_video (``encode_mp4``)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            what = _writes_video(node)
            if what:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {what}")
    assert len(found) == 1 and found[0].startswith("workbench/common.py:") and found[0].endswith("av.open(mode='w')"), found
