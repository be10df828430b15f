"""Generated footage with known shot boundaries, for the curation tests and the split benchmark.

Each shot is a moving texture of its own (smooth random noise in its own colours, panning at its own speed), so
detectors see what they see on real video: motion inside shots, different content across them. A script is a
list of steps: ``("shot", seconds)``, ``("cut",)`` (the next shot starts on the next frame), ``("dissolve",
seconds)`` (a cross-fade into the next shot), ``("flash",)`` (one white frame inside the current shot). Frames
are written in-process with PyAV (libx264, yuv420p).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np


def texture(seed: int, height: int, width: int) -> np.ndarray:
    """A (2H, 2W, 3) uint8 smooth random texture with a colour cast of its own."""
    import cv2

    rng = np.random.default_rng(seed)
    base = rng.random((max(4, height // 6), max(4, width // 6), 3)).astype(np.float32)
    big = cv2.resize(base, (2 * width, 2 * height), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.random((height // 2, width // 2, 3)).astype(np.float32), (2 * width, 2 * height))
    cast = rng.random(3) * 0.8 + 0.2
    img = (0.75 * big + 0.25 * fine) * cast * 255
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass
class Footage:
    path: Path
    fps: float
    num_frames: int
    cuts: list[float] = field(default_factory=list)  # times of the first frame of each new shot
    gradual: list[tuple[float, float]] = field(default_factory=list)  # [start, end] of each dissolve
    flashes: list[float] = field(default_factory=list)
    shots: list[tuple[float, float]] = field(default_factory=list)  # the true shots, [start, end)

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def _pingpong(p: float, span: int) -> int:
    """A position that moves back and forth over [0, span] (no jump when it reaches the edge)."""
    p = p % (2 * span)
    return int(round(p if p <= span else 2 * span - p)) % (span + 1)


def render_script(script: list[tuple], fps: float, height: int, width: int, seed: int = 0):
    """Frames of a script and the truth: (frames, cuts, gradual spans, flashes, shots) with times in seconds."""
    frames: list[np.ndarray] = []
    cuts, gradual, flashes, shots = [], [], [], []
    shot_no = 0
    shot_start = 0.0
    pending = None  # a dissolve waiting for the next shot

    def shot_frames(k: int, count: int) -> list[np.ndarray]:
        tex = texture(seed * 1000 + k, height, width)
        rng = np.random.default_rng(seed * 7 + k)
        vy, vx = rng.uniform(-1.5, 1.5), rng.uniform(0.8, 2.5) * rng.choice([-1, 1])
        y0, x0 = height // 2, width // 2
        out = []
        for f in range(count):
            y = _pingpong(y0 + vy * f, height)
            x = _pingpong(x0 + vx * f, width)
            out.append(tex[y : y + height, x : x + width].copy())
        return out

    for step in script:
        if step[0] == "shot":
            count = int(round(step[1] * fps))
            new = shot_frames(shot_no, count)
            if pending is not None:
                d = int(round(pending * fps))
                t0 = len(frames) - d
                for j in range(d):
                    a = (j + 1) / (d + 1)
                    frames[t0 + j] = np.clip((1 - a) * frames[t0 + j] + a * new[j], 0, 255).astype(np.uint8)
                gradual.append((t0 / fps, len(frames) / fps))
                shots.append((shot_start, t0 / fps))
                shot_start = len(frames) / fps
                new = new[d:]
                pending = None
            elif shot_no:
                cuts.append(len(frames) / fps)
                shots.append((shot_start, len(frames) / fps))
                shot_start = len(frames) / fps
            frames += new
            shot_no += 1
        elif step[0] == "cut":
            pass
        elif step[0] == "dissolve":
            pending = step[1]
        elif step[0] == "flash":
            k = len(frames) - int(round(step[1] * fps)) if len(step) > 1 else len(frames) - 1
            frames[k] = np.full_like(frames[k], 255)
            flashes.append(k / fps)
    shots.append((shot_start, len(frames) / fps))
    return np.stack(frames), cuts, gradual, flashes, shots


def write_video(path: Path, frames: np.ndarray, fps: float, *, crf: int = 18, preset: str = "veryfast",
                gop: int | None = None) -> Path:
    """Frames (F, H, W, 3) uint8 -> an H.264 mp4 at a constant ``fps``, in-process with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset, **({"g": str(gop)} if gop else {})}
        for picture in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_footage(path: Path, script: list[tuple], fps: float = 16, height: int = 64, width: int = 96,
                 seed: int = 0, **kw) -> Footage:
    frames, cuts, gradual, flashes, shots = render_script(script, fps, height, width, seed)
    write_video(path, frames, fps, **kw)
    return Footage(path, fps, len(frames), cuts, gradual, flashes, shots)


def make_phone_file(path: Path, seconds_per_shot: tuple[float, float] = (3.0, 3.0), seed: int = 5) -> Footage:
    """A rotated (display matrix 90 degrees) variable-frame-rate file of two shots and a cut: coded 96x64 at 30
    fps for its first half, 15 fps after (the ffmpeg binary re-times and rotates it, as tests/helpers/clips.py
    does). The truth is on the displayed file's time axis."""
    import tempfile

    from tests.helpers.clips import run_ffmpeg

    a, b = seconds_per_shot
    path.parent.mkdir(parents=True, exist_ok=True)
    frames, cuts, _, _, _ = render_script([("shot", a), ("shot", b)], 30, 64, 96, seed)
    with tempfile.TemporaryDirectory() as tmp:
        plain = write_video(Path(tmp) / "plain.mp4", frames, 30)
        half = len(frames) // 2
        # frames before `half` keep 30 fps; after it every frame is shown twice as long (15 fps)
        vfr = Path(tmp) / "vfr.mp4"
        run_ffmpeg(["-i", str(plain), "-vf", f"setpts='if(lt(N,{half}),N,{half}+(N-{half})*2)/(30*TB)'",
                    "-fps_mode", "passthrough", "-c:v", "libx264", "-crf", "18", "-preset", "veryfast",
                    "-pix_fmt", "yuv420p", str(vfr)])
        run_ffmpeg(["-display_rotation", "90", "-i", str(vfr), "-c", "copy", str(path)])

    def retime(t: float) -> float:  # frame k (k / 30 s in the plain file) is shown at its re-timed pts
        k = round(t * 30)
        return k / 30 if k < half else (half + (k - half) * 2) / 30

    n = len(frames)
    end = retime((n - 1) / 30) + 2 / 30
    cut_times = [retime(c) for c in cuts]
    return Footage(path, 0.0, n, cut_times, [], [], [(0.0, cut_times[0]), (cut_times[0], end)])
