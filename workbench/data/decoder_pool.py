"""The decord worker pool: videos opened and decoded in separate processes.

decord raises on most bad input, but it is known to abort the process (an uncaught C++ error in its
decoder thread) or segfault on some corrupt files (dmlc/decord#25, #99, #229), and a hung decode must
not hang the caller. A worker that dies or overruns its timeout is reported for that file and replaced.
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

DEFAULT_TIMEOUT_S = 60.0


def _serve() -> None:
    """The worker loop: JSON requests on stdin, one JSON answer a line on the protocol pipe.

    ``{"op": "open", "path": P}`` -> frame count, fps and size (decodes frame 0);
    ``{"op": "decode", "indices": [...]}`` -> decodes those frames of the last opened file.
    """
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever decord/ffmpeg print must not interleave with the answers
    import decord

    reader = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "open":
                reader = None
                reader = decord.VideoReader(request["path"], ctx=decord.cpu(0), num_threads=1)
                n = len(reader)
                h, w, c = reader[0].shape if n else (0, 0, 3)
                answer = {"ok": True, "num_frames": n, "fps": float(reader.get_avg_fps()), "height": int(h),
                          "width": int(w), "channels": int(c)}
            else:
                reader.get_batch(request["indices"]).asnumpy()
                answer = {"ok": True}
        except Exception as e:  # decord raises DECORDError, RuntimeError, IndexError... for bad input
            answer = {"ok": False, "error": (str(e).strip().splitlines() or [type(e).__name__])[0][:300]}
        protocol.write(json.dumps(answer) + "\n")


def _describe_exit(rc: int | None) -> str:
    if rc is not None and rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}"


class _DecoderProcess:
    """One decord worker subprocess, restarted after a crash or a timeout."""

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
    """``jobs`` decord worker processes shared by threads; use as a context manager."""

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

    def probe(self, path: Path, num_frames: int, fps: float | None, decode: bool) -> dict:
        """Open ``path``; with ``decode``, also decode the frames training would take from it.

        Returns the video's ``num_frames, fps, height, width`` and, on failure, ``code`` + ``error``.
        """
        from workbench.data.video import VideoError, frame_indices_at_fps

        worker = self.free.get()
        try:
            info = worker.request({"op": "open", "path": str(path)})
            if not info.get("ok") or not decode or info["num_frames"] < 1 or info["fps"] <= 0:
                return info
            try:
                indices = frame_indices_at_fps(info["num_frames"], info["fps"], num_frames, fps)
            except VideoError:
                return info  # too short: reported from the frame count, nothing to decode
            decoded = worker.request({"op": "decode", "indices": indices})
            return info if decoded.get("ok") else {**info, **decoded, "ok": False, "opened": True}
        finally:
            self.free.put(worker)
