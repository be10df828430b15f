"""`workbench data split` throughput on 1080p H.264 footage: seconds of footage split per second of wall time.

    python benchmarks/split_throughput.py --jobs 2 [--footage DIR] [--files 4 --seconds 20]

Without ``--footage`` it generates the footage once into ``benchmarks/.footage-1080p`` (moving textures in
shots of 8 s, hard cuts and a 1 s dissolve, 1920x1080 at 30 fps, libx264 veryfast crf 23, keyframe every 2 s as a camera
writes) and reuses it. The split runs with the command's defaults (PySceneDetect detection and every score at
256 px) and its process pool over ``--jobs`` workers; the result (and the machine's CPU count) goes to
``benchmarks/results/split_throughput.json``. Goal (issue "From raw footage to a training set"): 4x real time
on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make(footage: Path, files: int, seconds: float) -> None:
    from tests.helpers.footage import make_footage

    footage.mkdir(parents=True, exist_ok=True)
    shots = max(1, int(seconds // 8))
    for k in range(files):
        path = footage / f"take{k:02d}.mp4"
        if path.exists():
            continue
        script = [("shot", 8.0)] * shots
        if shots > 2:
            script.insert(2, ("dissolve", 1.0))
        tmp = path.with_suffix(".tmp.mp4")
        make_footage(tmp, script, fps=30, height=1080, width=1920, seed=k, crf=23, preset="veryfast", gop=60)
        tmp.rename(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--footage", type=Path, default=REPO / "benchmarks" / ".footage-1080p")
    ap.add_argument("--files", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=24.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "split_throughput.json")
    args = ap.parse_args()

    from workbench.curate.split import ClipPlan, SplitOptions, split_footage
    from workbench.data.decoding import probe

    t = time.perf_counter()
    make(args.footage, args.files, args.seconds)
    made = time.perf_counter() - t
    videos = sorted(args.footage.glob("*.mp4"))
    seconds = sum(probe(v).duration for v in videos)
    with tempfile.TemporaryDirectory() as tmp:
        options = SplitOptions(ClipPlan(49, 8.0), jobs=args.jobs)
        t = time.perf_counter()
        result = split_footage(args.footage, Path(tmp) / "out", options, progress=False)
        wall = time.perf_counter() - t
        state = json.loads((Path(tmp) / "out" / "split.json").read_text())
    per_file = {k: v.get("seconds") for k, v in state["sources"].items()}
    record = {"benchmark": "split_throughput", "command": " ".join(["python", *sys.argv]),
              "footage": {"files": len(videos), "seconds": round(seconds, 2), "size": "1920x1080", "fps": 30,
                          "codec": "h264 (libx264 veryfast: CABAC, B-frames; crf 23, gop 60)"},
              "jobs": args.jobs, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "load_average_before": os.getloadavg(), "wall_s": round(wall, 2),
              "realtime_factor": round(seconds / wall, 2), "per_file_worker_s": per_file, "clips": result.clips,
              "generate_s": round(made, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
