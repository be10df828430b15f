"""The decoder worker pool: videos probed and decoded in separate processes.

The workers read a clip exactly as training does (:mod:`workbench.data.decoding`: decord, PyAV where decord
fails; the frames :func:`workbench.data.video.frame_times_at_fps` takes), so `data check` passes what
training reads and names the cause of what it cannot. They run in separate processes because decord is
known to abort the process (an uncaught C++ error in its decoder thread) or segfault on some corrupt files
(dmlc/decord#25, #99, #229), and a hung decode must not hang the caller. A worker that dies or overruns its
timeout is reported for that file and replaced.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.data.decoding import VideoInfo

DEFAULT_TIMEOUT_S = 60.0


def _answer_open(path: str, start: float | None = None, end: float | None = None) -> tuple[dict, VideoInfo | None]:
    """The worker's answer to ``open`` and the VideoInfo it found (None when the file cannot be read); with a
    range, also the count (``range_num_frames``) and mean rate (``range_fps``) of the frames within it."""
    from workbench.data.decoding import UnsupportedCodecError, probe

    try:
        info = probe(path)
    except UnsupportedCodecError as e:
        return {"ok": False, "code": "unsupported_codec", "codec": e.codec, "command": e.command,
                "error": str(e)}, None
    lowest, highest = info.fps_range
    # "channels" is always 3 now (PyAV reads the widths decord mangles); kept for callers that still check it
    return {"ok": True, "num_frames": int(info.num_frames), "fps": float(info.fps), "height": int(info.height),
            "width": int(info.width), "channels": 3, "duration": float(info.duration), "vfr": bool(info.vfr),
            "fps_min": float(lowest), "fps_max": float(highest), "codec": info.codec, "backend": info.backend,
            **_range_answer(info, start, end)}, info


def _range_answer(info: VideoInfo, start: float | None, end: float | None) -> dict:
    if start is None:
        return {}
    from workbench.data.video import range_info, frames_in_range

    first, count = frames_in_range(info, start, end)
    return {"range_num_frames": count, "range_fps": float(range_info(info, first, count).fps)}


def _answer_decode(path: str, info: VideoInfo, num_frames: int, fps: float | None, start: float | None = None,
                   end: float | None = None) -> dict:
    """Decode the frames training would take from the last opened file, or its range (nothing when it is too
    short)."""
    from workbench.data.decoding import VideoError, read_frames
    from workbench.data.video import frame_times_at_fps

    try:
        times = frame_times_at_fps(info, num_frames, fps, start, end)
    except VideoError:
        return {"ok": True, "decoded": 0}  # too short: the caller reports it from the frame count
    frames = read_frames(path, times)
    if frames.shape != (len(times), info.height, info.width, 3):
        return {"ok": False, "error": f"decoded frames of shape {tuple(frames.shape)}, expected "
                f"{(len(times), info.height, info.width, 3)}"}
    return {"ok": True, "decoded": len(times)}


def _first_line(e: Exception) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    return text.removeprefix("cannot decode: ")  # the caller says what failed ("corrupt video: ...")


def _serve() -> None:
    """The worker loop: JSON requests on stdin, one JSON answer a line on the protocol pipe.

    ``{"op": "open", "path": P}`` -> frame count, fps, size, duration, ``vfr`` and its range of frame rates
    (finds every frame's timestamp and decodes frame 0); ``{"op": "decode", "num_frames": N, "fps": F}`` ->
    decodes the frames training takes from the last opened file. A failure answers ``ok: false`` with the
    ``error`` and, for a codec nothing here decodes, ``code: unsupported_codec``, the ``codec`` and the
    re-encode ``command``.
    """
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever decord/ffmpeg print must not interleave with the answers
    path, info = None, None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "open":
                path, info = request["path"], None
                answer, info = _answer_open(path, request.get("start"), request.get("end"))
            elif info is None:
                answer = {"ok": False, "error": "nothing opened to decode"}
            else:
                answer = _answer_decode(path, info, request["num_frames"], request.get("fps"), request.get("start"),
                                        request.get("end"))
        except Exception as e:  # VideoError, and whatever else a decoder raises on bad input
            answer = {"ok": False, "error": _first_line(e)}
        protocol.write(json.dumps(answer) + "\n")


def _describe_exit(rc: int | None) -> str:
    if rc is not None and rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}"


class _DecoderProcess:
    """One decoder worker subprocess, restarted after a crash or a timeout."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue = queue.Queue()

    def _start(self) -> None:
        env = dict(os.environ)
        package_parent = str(Path(__file__).resolve().parents[2])  # so the worker imports this workbench
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), package_parent) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from workbench.data.decoder_pool import _serve; _serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True).start()

    @staticmethod
    def _pump(stream, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    def request(self, request: dict) -> dict:
        """The worker's answer, or ``{"ok": False, "code": decoder_crash|decoder_timeout, ...}``."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._crashed()
        while True:
            try:
                line = self.lines.get(timeout=self.timeout)
            except queue.Empty:
                self.close()
                return {"ok": False, "code": "decoder_timeout",
                        "error": f"decoding did not finish in {self.timeout:g} s (the decoder hung)"}
            if line is None:
                return self._crashed()
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue

    def _crashed(self) -> dict:
        rc = self.proc.wait()
        self.proc = None
        return {"ok": False, "code": "decoder_crash", "error": f"the decoder crashed ({_describe_exit(rc)})"}

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class DecoderPool:
    """``jobs`` decoder worker processes shared by threads; use as a context manager."""

    def __init__(self, jobs: int, timeout: float = DEFAULT_TIMEOUT_S):
        self.jobs = max(1, jobs)
        self.processes = [_DecoderProcess(timeout) for _ in range(self.jobs)]
        self.free: queue.Queue = queue.Queue()
        for p in self.processes:
            self.free.put(p)

    def __enter__(self) -> DecoderPool:
        return self

    def __exit__(self, *exc) -> None:
        for p in self.processes:
            p.close()

    def probe(self, path: Path, num_frames: int, fps: float | None, decode: bool, start: float | None = None,
              end: float | None = None) -> dict:
        """Open ``path``; with ``decode``, also decode the frames training would take from it (from its range
        [start, end] s when given: the answer then has ``range_num_frames`` and ``range_fps`` too).

        Returns the video's ``num_frames, fps, height, width, duration, vfr, fps_min, fps_max, codec`` and, on
        failure, ``ok: false`` with ``error`` and maybe ``code`` (``unsupported_codec``, ``decoder_crash``,
        ``decoder_timeout``); ``opened: true`` when the file opened but its frames did not decode.
        """
        worker = self.free.get()
        try:
            info = worker.request({"op": "open", "path": str(path), "start": start, "end": end})
            if not info.get("ok") or not decode or info["num_frames"] < 1 or info["fps"] <= 0:
                return info
            decoded = worker.request({"op": "decode", "num_frames": num_frames, "fps": fps, "start": start,
                                      "end": end})
            return info if decoded.get("ok") else {**info, **decoded, "ok": False, "opened": True}
        finally:
            self.free.put(worker)
