"""``--export-clips``: each clip's range of its source written as a file of its own (H.264, in-process PyAV).

Frames are the source's own (every frame whose presentation time lies in the range, as displayed: rotation
applied, variable frame rate kept through each frame's timestamp), so the file holds what the range row means
and the reader samples it exactly as it would sample the range. Written in the worker process with PyAV, never
by an ffmpeg subprocess (a subprocess started from a thread can hang), each file atomically (temporary name,
rename).
"""

from __future__ import annotations

import hashlib
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

CLIPS = "clips"


def clip_name(row: dict) -> str:
    stem = Path(row["source"]).stem[:60] or "clip"
    digest = hashlib.sha1(row["source"].encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{CLIPS}/{stem}-{digest}-{int(round(row['start'] * 1000)):08d}.mp4"


def export_clips(path: str, rows: list[dict], out: Path, crf: int = 18) -> None:
    """Write every row's clip into ``out/clips/`` and set its ``file_name`` (relative to ``out``)."""
    import av
    from av.video.reformatter import VideoReformatter

    from workbench.data.decoding import probe, read_frames
    from workbench.data.shots import release_pyav_scalers

    try:
        _export(path, rows, out, crf, av, VideoReformatter(), probe, read_frames)
    finally:
        release_pyav_scalers()


def _export(path, rows, out, crf, av, scaler, probe, read_frames) -> None:

    info = probe(path)
    times = info.frame_times
    (out / CLIPS).mkdir(parents=True, exist_ok=True)
    for row in rows:
        name = clip_name(row)
        target = out / name
        picks = np.flatnonzero((times >= row["start"] - 1e-6) & (times < row["end"] - 1e-6))
        if picks.size == 0:
            picks = np.array([int(np.searchsorted(times, row["start"], side="right")) - 1])
        frames = read_frames(path, [info.display_midpoint(int(k)) for k in picks])
        h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp.mp4")
        try:
            with av.open(str(tmp), "w") as container:
                stream = container.add_stream("libx264", rate=Fraction(info.fps).limit_denominator(1001))
                stream.height, stream.width, stream.pix_fmt = h, w, "yuv420p"
                stream.codec_context.time_base = Fraction(1, 1000)
                stream.options = {"crf": str(crf), "preset": "veryfast"}
                t0 = float(times[picks[0]])
                for k, picture in zip(picks, frames):
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture[:h, :w]), format="rgb24")
                    frame = scaler.reformat(frame, format="yuv420p", threads=1)  # not the encoder's threaded one
                    frame.pts = int(round((float(times[k]) - t0) * 1000))
                    frame.time_base = Fraction(1, 1000)
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        row["file_name"] = name
