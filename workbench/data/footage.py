"""What ``data check`` says about footage: samples whose window crosses a shot boundary, how much of each file
training uses, and the distribution of ``data split``'s quality scores when the manifest has them.

* **Crossed transitions** (``crosses_transition`` warning): each usable sample's window (the frames its
  sampling takes, from the centre of the file or of its range) is decoded once more at a small size, with a
  little context either side, and PySceneDetect's detector plus the dissolve detector of
  :mod:`workbench.data.shots` run over it. Only the window is decoded, so this costs about what the decode check
  did. A sample whose window holds a cut or a dissolve trains on two shots at once: the warning names the file,
  the window and the transition's time.
* **Unused footage** (a note): per source file, its seconds against the seconds its samples cover. A file much
  longer than what training takes (one 49-frame window of a 64 s reel) is named with the fix, ``workbench data
  split``.
* **Scores**: when the manifest's rows carry ``motion``, ``exposure``, ... (``data split`` writes them), their
  distribution goes into the report's summary (``quality``).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from workbench.data.shots import CUT, DetectOptions, analyse, release_pyav_scalers

CONTEXT_S = 0.75  # seconds decoded either side of a window, so detectors see the frames around its edges
UNUSED_RATIO = 2.0  # a file is "mostly unused" when it holds this many times the seconds its samples cover
UNUSED_MIN_S = 10.0  # ... and at least this many seconds go unused
MAX_NAMED_FILES = 10
SCORES = ("motion", "exposure", "underexposed", "overexposed", "sharpness")


def sample_window(info, num_frames: int, fps: float | None, start: float | None = None,
                  end: float | None = None) -> tuple[float, float]:
    """(first, last) presentation time of the frames a sample takes."""
    from workbench.data.video import frame_numbers_at_fps

    numbers = frame_numbers_at_fps(info, num_frames, fps, start, end)
    return float(info.frame_times[min(numbers)]), float(info.frame_times[max(numbers)])


def check_footage(root: Path, results, num_frames: int, fps: float | None, *, jobs: int | None = None,
                  options: DetectOptions = DetectOptions(), progress: bool = True) -> tuple[list[str], dict]:
    """Add ``crosses_transition`` warnings to ``results`` (validate's SampleResults) and return (notes, summary)."""
    from tqdm.auto import tqdm

    from workbench.data.decoding import probe
    from workbench.data.validate import WARNING

    usable = []
    for r in results:
        if not r.usable:
            continue
        try:
            path = r.entry.path(root)
            info = probe(path)
            window = sample_window(info, num_frames, fps, r.entry.start, r.entry.end)
        except Exception:  # noqa: BLE001 - validate already judged the sample; nothing more to say here
            continue
        usable.append((r, path, info, window))

    def detect(item):
        r, path, info, (a, b) = item
        try:
            found = analyse(path, start=max(0.0, a - CONTEXT_S), end=min(info.duration, b + CONTEXT_S),
                            options=options).transitions
        except Exception:  # noqa: BLE001
            return []
        return [t for t in found if t.crosses(a, b)]

    workers = max(1, min(jobs or 2, 8))
    with ThreadPoolExecutor(workers) as pool:
        crossings = list(tqdm(pool.map(detect, usable), total=len(usable), desc="looking for cuts",
                              unit="sample", disable=not progress or not usable, dynamic_ncols=True))
    for (r, _, _, (a, b)), found in zip(usable, crossings):
        if not found:
            continue
        what = ", ".join(f"a cut at {t.start:.2f} s" if t.kind == CUT else f"a dissolve/fade {t.start:.2f}-{t.end:.2f} s"
                         for t in found)
        r.add(WARNING, "crosses_transition", f"the sample's window {a:.2f}-{b:.2f} s crosses {what}: it trains on "
              "two shots as one; cut the file at its shots (`workbench data split`)")

    used: dict[Path, list[tuple[float, float]]] = {}
    durations: dict[Path, tuple[str, float]] = {}
    span = num_frames / fps if fps else None
    for r, path, info, (a, b) in usable:
        key = path.resolve()
        durations[key] = (r.entry.file_name, float(info.duration))
        step = span if span else (b - a) + 1.0 / max(info.fps, 1e-6)
        used.setdefault(key, []).append((a, a + step))
    total = sum(d for _, d in durations.values())
    used_s = {k: _union(v) for k, v in used.items()}
    summary = {"seconds": round(total, 3), "used_seconds": round(sum(used_s.values()), 3),
               "crossing_samples": sum(bool(c) for c in crossings)}
    notes = []
    mostly_unused = [(name, d, used_s[k]) for k, (name, d) in durations.items()
                     if d >= UNUSED_RATIO * used_s[k] and d - used_s[k] >= UNUSED_MIN_S]
    for name, d, u in mostly_unused[:MAX_NAMED_FILES]:
        notes.append(f"{name}: {d:.1f} s of video, {u:.1f} s used by training: `workbench data split` cuts it into "
                     "clips inside its shots")
    if len(mostly_unused) > MAX_NAMED_FILES:
        notes.append(f"... and {len(mostly_unused) - MAX_NAMED_FILES} more files of which training uses less than "
                     f"1/{UNUSED_RATIO:g} (report.json: summary.footage)")
    summary["mostly_unused_files"] = len(mostly_unused)
    release_pyav_scalers()
    return notes, summary


def _union(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, -np.inf
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def score_distribution(root: Path) -> dict:
    """min / p10 / median / p90 / max of each score column of ``root/metadata.jsonl`` ({} without any), and how
    many rows are near-duplicates or have black borders."""
    path = Path(root) / "metadata.jsonl"
    if not path.is_file():
        return {}
    rows = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except (OSError, UnicodeDecodeError):
        return {}
    out = {}
    for key in SCORES:
        values = np.array([r[key] for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)],
                          dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            q = np.percentile(values, [0, 10, 50, 90, 100])
            out[key] = dict(zip(("min", "p10", "median", "p90", "max"), (round(float(x), 4) for x in q)))
    if out:
        out["near_duplicates"] = sum(1 for r in rows if r.get("duplicate_of"))
        out["with_borders"] = sum(1 for r in rows if isinstance(r.get("borders"), list) and any(
            isinstance(x, (int, float)) and x > 0 for x in r["borders"]))
    return out


def markdown(summary: dict) -> list[str]:
    """The report's lines for footage use and the score distribution."""
    lines = []
    f = summary.get("footage")
    if f and f.get("seconds"):
        lines += ["## Footage", "", f"- {f['seconds']:.1f} s of video, {f['used_seconds']:.1f} s used by training; "
                  f"{f['crossing_samples']} samples cross a shot boundary", ""]
    q = summary.get("quality")
    if q:
        lines += ["## Quality scores (data split)", "", "| score | min | p10 | median | p90 | max |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {k} | " + " | ".join(f"{v[s]:g}" for s in ("min", "p10", "median", "p90", "max")) + " |"
                  for k, v in q.items() if isinstance(v, dict)]
        lines += ["", f"- near-duplicates: {q.get('near_duplicates', 0)}, clips with black borders: "
                      f"{q.get('with_borders', 0)}", ""]
    return lines
