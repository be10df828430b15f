"""Tiny test clips whose every frame says which frame it is, for the decoding tests.

Frame k (0 <= k < 64) carries k in its bottom half as two base-8 digits, one grey level per bottom
quarter (left ``k // 8``, right ``k % 8``, grey ``24 + 30 * digit``): steps of 30 survive every codec, GIF
palettes and colour-range conversions, and :func:`frame_index` reads them back. The top-left third is black,
an orientation mark for the rotation tests. So a test knows which frame a decoder returned without trusting
any decoder, and, with the clip's presentation times, which time it came from.

Clips are encoded with the ffmpeg binary bundled with imageio-ffmpeg (``imageio_ffmpeg.get_ffmpeg_exe()``,
raw RGB on stdin), 64x48 and about 2 s unless said otherwise: :func:`make_clips` writes the whole set in a
few seconds.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

HEIGHT, WIDTH = 48, 64

X264 = ["-c:v", "libx264", "-preset", "medium", "-crf", "12", "-pix_fmt", "yuv420p"]  # B-frames: reordering
AV1 = ["-c:v", "libaom-av1", "-cpu-used", "8", "-crf", "20", "-b:v", "0", "-pix_fmt", "yuv420p"]
AVS2 = ["-c:v", "libxavs2", "-pix_fmt", "yuv420p"]  # no AVS2 decoder in decord's FFmpeg nor in PyAV's
GIF = ["-vf", "split[a][b];[a]palettegen=reserve_transparent=0:stats_mode=full[p];[b][p]paletteuse=dither=none",
       "-loop", "0"]


@dataclass(frozen=True)
class Clip:
    """A generated clip and what it should decode to: frame k is shown from ``times[k]`` seconds."""

    path: Path
    times: tuple[float, ...]
    height: int = HEIGHT
    width: int = WIDTH

    @property
    def num_frames(self) -> int:
        return len(self.times)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def digit_level(digit: int) -> int:
    return 24 + 30 * digit


def frame_index(frame: np.ndarray) -> int:
    """The number a generated frame carries: (H, W, 3) uint8 -> k."""
    h, w = frame.shape[:2]
    margin = max(1, w // 8)  # keep clear of the edge between the two digits, where chroma bleeds
    high = float(np.median(frame[h // 2 + 1 :, : w // 2 - margin, :3]))
    low = float(np.median(frame[h // 2 + 1 :, w // 2 + margin :, :3]))
    return 8 * int(round((high - 24) / 30)) + int(round((low - 24) / 30))


def render(k: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Frame ``k``: mid grey, k in the bottom half, a black top-left third."""
    if not 0 <= k < 64:
        raise ValueError(f"frame number {k} does not fit two base-8 digits")
    img = np.full((height, width, 3), 128, np.uint8)
    img[height // 2 :, : width // 2] = digit_level(k // 8)
    img[height // 2 :, width // 2 :] = digit_level(k % 8)
    img[: height // 3, : width // 3] = 0
    return img


def frames(count: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    return np.stack([render(k, height, width) for k in range(count)])


def run_ffmpeg(args: list[str], stdin: bytes | None = None) -> None:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], input=stdin,
                          capture_output=True)
    if proc.returncode:
        tail = "\n".join(proc.stderr.decode(errors="replace").strip().splitlines()[-5:])
        raise RuntimeError(f"ffmpeg {' '.join(args[-12:])} failed:\n{tail}")


def encode(out: Path, pictures: np.ndarray, rate: str, codec_args: list[str]) -> Path:
    """Raw RGB ``pictures`` at the constant ``rate`` (e.g. "24", "30000/1001") -> ``out``."""
    _, h, w, _ = pictures.shape
    run_ffmpeg(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", rate, "-i", "-",
                *codec_args, str(out)], pictures.tobytes())
    return out


def write_like_the_project(out: Path, pictures: np.ndarray, fps: float) -> Path:
    """An mp4 written as workbench.shapes.sample_dataset.write_mp4 writes one (the package's one writer)."""
    from workbench.shapes.sample_dataset import write_mp4

    write_mp4(out, pictures, fps)
    return out


def constant_rate_times(count: int, rate: Fraction | int) -> tuple[float, ...]:
    return tuple(float(k / Fraction(rate)) for k in range(count))


def make_clips(out: Path) -> dict[str, Clip]:
    """Write every test clip into ``out``; name -> Clip."""
    out.mkdir(parents=True, exist_ok=True)
    clips: dict[str, Clip] = {}
    t24 = constant_rate_times(48, 24)

    # ordinary constant-rate clips: H.264 with B-frames; NTSC 29.97 in Matroska's 1 ms clock (33/34 ms
    # steps); and what the project's own writer makes (the sample dataset, the tests' clips)
    clips["h264.mp4"] = Clip(encode(out / "h264.mp4", frames(48), "24", X264), t24)
    t2997 = constant_rate_times(48, Fraction(30000, 1001))
    clips["h264_2997.mkv"] = Clip(encode(out / "h264_2997.mkv", frames(48), "30000/1001", X264), t2997)
    clips["project.mp4"] = Clip(write_like_the_project(out / "project.mp4", frames(30), 16),
                                constant_rate_times(30, 16))
    clips["h264_wide.mp4"] = Clip(encode(out / "h264_wide.mp4", frames(40, 48, 96), "30", X264),
                                  constant_rate_times(40, 30), width=96)

    # what decord cannot read: AV1 (mp4, mkv), animated GIF, AVS2 (nothing here reads it)
    for ext in ("mp4", "mkv"):
        clips[f"av1.{ext}"] = Clip(encode(out / f"av1.{ext}", frames(48), "24", AV1), t24)
    clips["anim.gif"] = Clip(encode(out / "anim.gif", frames(20), "10", GIF), constant_rate_times(20, 10))
    try:  # an ffmpeg build without libxavs2 has no such clip; the tests that need it skip
        clips["avs2.ts"] = Clip(encode(out / "avs2.ts", frames(48), "24", AVS2), t24)
    except RuntimeError:
        pass

    # variable frame rate: 30 fps for the first second, then 10 fps up to 2 s (setpts re-times a 30 fps
    # input); 41 frames, so the clip's centre (1 s) is a frame and not a tie between two
    vfr_times = tuple([k / 30 for k in range(30)] + [1 + j / 10 for j in range(11)])
    retime = ["-vf", "setpts='if(lt(N,30),N,30+(N-30)*3)'", "-fps_mode", "passthrough"]
    for ext in ("mp4", "mkv"):
        clips[f"vfr.{ext}"] = Clip(encode(out / f"vfr.{ext}", frames(41), "30", [*retime, *X264]), vfr_times)

    # several GOPs (a keyframe every 6 frames), so PyAV's reader seeks
    clips["gop6.mkv"] = Clip(encode(out / "gop6.mkv", frames(60), "24", [*X264, "-g", "6", "-keyint_min", "6"]),
                             constant_rate_times(60, 24))

    # widths at which decord returns 4- or 6-channel frames
    for w in (16, 24, 48, 72):
        clips[f"w{w}.mp4"] = Clip(encode(out / f"w{w}.mp4", frames(48, HEIGHT, w), "24", X264), t24, width=w)

    # rotation: coded 64x32 (so the rotated width, 32, is one decord reads); -display_rotation writes the
    # display matrix phones write
    clips["rot0.mp4"] = Clip(encode(out / "rot0.mp4", frames(48, 32, 64), "24", X264), t24, 32, 64)
    for degrees in (90, 180, 270):
        name = f"rot{degrees}.mp4"
        run_ffmpeg(["-display_rotation", str(degrees), "-i", str(out / "rot0.mp4"), "-c", "copy", str(out / name)])
        size = (64, 32) if degrees in (90, 270) else (32, 64)
        clips[name] = Clip(out / name, t24, *size)
    return clips


def shape_clip(path: Path, frames: int = 24, fps: float = 16, height: int = 64, width: int = 96,
               colour: tuple[int, int, int] = (230, 40, 40), shape: str = "circle",
               direction: str = "left to right") -> Path:
    """An mp4 of one shape of the shapes world crossing the frame, in any RGB ``colour`` (the data tests
    give each clip its own colour so no two files have the same bytes)."""
    from workbench.shapes.sample_dataset import write_mp4
    from workbench.shapes.world import COLOURS, Scene, render

    pictures = render(Scene("red", shape, direction), frames, height, width)
    pictures[(pictures == COLOURS["red"]).all(-1)] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, pictures, fps)
    return path
