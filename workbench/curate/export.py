"""``--export-clips``: each clip's range of its source written as a file of its own (H.264, in-process PyAV).

Frames are the source's own (every frame whose presentation time lies in the range, as displayed: rotation
applied, variable frame rate kept through each frame's timestamp), so the file holds what the range row means
and the reader samples it exactly as it would sample the range. Written in the worker process with PyAV, never
by an ffmpeg subprocess (a subprocess started from a thread can hang), each file atomically (temporary name,
rename).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

CLIPS = "clips"


def clip_name(row: dict) -> str:
    stem = Path(row["source"]).stem[:60] or "clip"
    digest = hashlib.sha1(row["source"].encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{CLIPS}/{stem}-{digest}-{int(round(row['start'] * 1000)):08d}.mp4"


def export_clips(path: str, rows: list[dict], out: Path, crf: int = 18) -> None:
    """Write every row's clip into ``out/clips/`` and set its ``file_name`` (relative to ``out``), through the
    package's one video writer (workbench.common.write_video: in-process, atomic), each frame at its own
    presentation time."""
    from workbench.common import write_video
    from workbench.data.decoding import probe, read_frames
    from workbench.data.shots import release_pyav_scalers

    try:
        info = probe(path)
        times = info.frame_times
        (out / CLIPS).mkdir(parents=True, exist_ok=True)
        for row in rows:
            name = clip_name(row)
            picks = np.flatnonzero((times >= row["start"] - 1e-6) & (times < row["end"] - 1e-6))
            if picks.size == 0:
                picks = np.array([int(np.searchsorted(times, row["start"], side="right")) - 1])
            frames = read_frames(path, [info.display_midpoint(int(k)) for k in picks])
            h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2  # yuv420p: even sides
            write_video(out / name, frames[:, :h, :w], info.fps, crf=crf, times=[float(times[k]) for k in picks],
                        preset="veryfast")
            row["file_name"] = name
    finally:
        release_pyav_scalers()
