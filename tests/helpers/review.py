"""A real-format evaluation folder for the review tests, without generating: results.json, .eval-state.json,
suite.yaml and H.264 mp4s (PyAV) laid out exactly as ``workbench eval --compare-base`` writes them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROMPTS = ["a yellow circle moving from left to right on a dark background",
           "a yellow square moving from top to bottom on a dark background",
           "a yellow triangle moving from right to left on a dark background"]
SEEDS = (0, 1)
BASE_LABEL = "/models/shapes-miniature-BASE-secret"
MODEL_LABEL = "/runs/finetune-secret-7f3a/checkpoints/last.ckpt"


def write_mp4(path: Path, colour, direction: int, frames: int = 9, size: int = 64, fps: int = 8) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for f in range(frames):
            img = np.full((size, size, 3), 20, np.uint8)
            x = int((f / (frames - 1)) * (size - 16)) if direction > 0 else int((1 - f / (frames - 1)) * (size - 16))
            img[24:40, x:x + 16] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def make_eval_folder(root: Path, *, run_id: str | None = None, tracking_uri: str | None = None,
                     criteria=("follows the prompt",)) -> Path:
    folder = root / "eval-secret-folder"
    rows = []
    for i, prompt in enumerate(PROMPTS):
        for seed in SEEDS:
            name = f"{i:03d}-seed{seed}.mp4"
            write_mp4(folder / "videos" / name, (230, 220, 30), 1)
            write_mp4(folder / "videos_base" / name, (90, 90, 200), -1)
            rows.append({"prompt_index": i, "prompt": prompt, "seed": seed, "clip_score": 10.0,
                         "path": f"videos/{name}", "base_clip_score": 5.0, "base_path": f"videos_base/{name}"})
    results = {"suite": "review-test", "suite_file": None, "model": MODEL_LABEL, "lora": None,
               "checkpoint": MODEL_LABEL, "global_step": 8, "base_model": BASE_LABEL, "run_id": run_id,
               "metrics": {}, "videos": rows}
    (folder / "results.json").write_text(json.dumps(results, indent=2))
    (folder / ".eval-state.json").write_text(json.dumps(
        {"format": 1, "complete": True, "mlflow": {"tracking_uri": tracking_uri, "run_id": run_id, "done": True}}))
    suite = "name: review-test\nprompts: [a, b, c]\n"
    if criteria:
        suite += "review:\n  criteria:\n" + "".join(f"    - {c}\n" for c in criteria)
    (folder / "suite.yaml").write_text(suite)
    return folder


LINK = re.compile(r"^(\S+): (http://\S+/r/(\S+)/)\s")


class Server:
    """``workbench review serve`` in a subprocess; ``links``: reviewer -> URL, read from what it prints."""

    def __init__(self, *args: str, env: dict | None = None, cwd: Path | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "review", "serve", *args, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})}, cwd=cwd)
        self.links: dict[str, str] = {}
        self.output = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            m = LINK.match(line)
            if m:
                self.links[m.group(1)] = m.group(2)
            if line.startswith("summary:"):
                break
        if not self.links:
            self.kill()
            raise RuntimeError("review serve printed no links:\n" + "".join(self.output))
        self._wait_ready(next(iter(self.links.values())))

    def _wait_ready(self, url: str) -> None:
        import urllib.request

        for _ in range(100):
            try:
                urllib.request.urlopen(url + "api/next", timeout=2).read()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("review serve did not answer")

    @property
    def root(self) -> str:
        return next(iter(self.links.values())).split("/r/")[0]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
