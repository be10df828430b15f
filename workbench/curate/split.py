"""``workbench data split``: every video under a folder, cut into training clips inside its shots.

Per source (one worker process each, ``jobs`` at a time): one decoding pass at the analysis size
(workbench.data.shots.analyse) finds the transitions and keeps per-frame statistics; the shots between
transitions, less ``margin`` seconds at each transition, are cut into as many clips of the recipe's length
(``num_frames / fps`` seconds) as fit, ``stride`` seconds apart (default: one clip length, no overlap), at most
``max_clips_per_shot`` (spread over the shot); each clip gets its quality scores (workbench.curate.quality).

OUT holds ``split.json`` (the resume state, rewritten atomically as each source finishes: the options that
change the analysis, and per source its size/mtime, duration, transitions, shots, clips or error), one
``.parts/<hash>.json`` per finished source with its rows, and at the end ``metadata.jsonl`` (the kept rows)
and ``dropped.jsonl`` (the rows a threshold dropped, with the reason). A rerun with the same analysis options
skips every source whose size and mtime are unchanged; thresholds apply to the stored scores, so changing one
re-decodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.common import UserError, atomic_write_json, atomic_write_text
from workbench.data.shots import DetectOptions, analyse, shots as shots_between

STATE = "split.json"
PARTS = ".parts"
FORMAT = 1


@dataclass(frozen=True)
class ClipPlan:
    """How clips are cut from shots: the recipe's clip and the spacing."""

    num_frames: int
    fps: float
    margin: float = 0.25  # seconds kept away from every transition
    stride: float | None = None  # seconds between clip starts (default: the clip's length)
    max_clips_per_shot: int | None = None

    @property
    def length(self) -> float:
        """Seconds a range covers: ``num_frames / fps`` (the sample times span (n-1)/fps, centred in it)."""
        return self.num_frames / self.fps

    def ranges(self, start: float, end: float, *, at_start: bool, at_end: bool) -> list[tuple[float, float]]:
        """Clip ranges in the shot ``[start, end]``: ``margin`` away from the transitions that bound it
        (``at_start``/``at_end``: whether a transition and not the file's edge bounds it)."""
        a = start + (self.margin if at_start else 0.0)
        b = end - (self.margin if at_end else 0.0)
        length, stride = self.length, self.stride or self.length
        usable = b - a
        if usable + 1e-9 < length:
            return []
        count = int(math.floor((usable - length) / stride + 1e-9)) + 1
        picks = list(range(count))
        if self.max_clips_per_shot and count > self.max_clips_per_shot:
            k = self.max_clips_per_shot
            picks = sorted({int(round(i * (count - 1) / max(k - 1, 1))) for i in range(k)})
        left = a + (usable - ((count - 1) * stride + length)) / 2.0  # centred: the slack split both sides
        return [(round(left + i * stride, 6), round(left + i * stride + length, 6)) for i in picks]


@dataclass
class SplitOptions:
    plan: ClipPlan
    detect: DetectOptions = field(default_factory=DetectOptions)
    thresholds: dict = field(default_factory=dict)  # quality.THRESHOLDS keys, max_border, drop_duplicates
    duplicate_distance: int = 6
    export_clips: bool = False
    jobs: int | None = None

    def fingerprint(self) -> dict:
        """What changes the per-source work (thresholds do not: they apply to stored scores)."""
        return {"format": FORMAT, "clip": asdict(self.plan), "detect": self.detect.to_dict(),
                "export_clips": self.export_clips}


VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mts", ".m2ts", ".ts", ".mpg",
                              ".mpeg", ".3gp", ".wmv", ".flv", ".gif"})


def list_sources(src: Path, skip: Path | None = None) -> list[tuple[str, str | None]]:
    """``[(path relative to src, caption or None)]``: the manifest's rows when SRC has one, else every file with
    a video extension below it (sorted). Raises UserError for a missing folder or an unreadable manifest."""
    from workbench.data.manifest import ManifestError, find_manifest, read_manifest

    if not src.is_dir():
        raise UserError(f"{src}: footage folder not found; give the folder that holds the videos")
    try:
        layout = find_manifest(src)
    except ManifestError:
        layout = None
    if layout:
        try:
            entries = read_manifest(src)
        except ManifestError as e:
            raise UserError(f"{e} (or remove the manifest to split every video under {src})") from None
        seen, out = set(), []
        for e in entries:
            if e.start is not None or e.base is not None:
                raise UserError(f"{src}: its manifest lists clip ranges ({e.where}): it is a split already; give "
                                "the footage folder it came from")
            e.path(src)  # inside SRC, or one line naming the row (PathOutsideRoot)
            if e.file_name and e.file_name not in seen:
                seen.add(e.file_name)
                out.append((e.file_name, e.caption))
        return out
    found = []
    skip = skip.resolve() if skip is not None else None
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (Path(dirpath, d).resolve() != skip))
        for name in filenames:
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS and not name.startswith("."):
                found.append((Path(dirpath, name).relative_to(src).as_posix(), None))
    return sorted(found)


def _part_name(rel: str) -> str:
    return hashlib.sha1(rel.encode("utf-8", "surrogatepass")).hexdigest()[:20] + ".json"


def split_source(path: str, rel: str, caption: str | None, options: SplitOptions, out: str) -> dict:
    """The worker: one source's transitions, shots, clip rows (with scores) and, with ``export_clips``, the
    clip files. Never raises: an unreadable file is ``{"error": ...}``."""
    from workbench.curate.quality import clip_scores
    from workbench.data.decoding import VideoError

    t0 = time.perf_counter()
    try:
        a = analyse(path, options=options.detect, frame_stats=True)
    except VideoError as e:
        return {"error": str(e).splitlines()[0] if str(e) else "unreadable video"}
    except Exception as e:  # noqa: BLE001 - one bad file never stops the run
        return {"error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"}
    import numpy as np

    times = a.frame_times
    rows, shot_records = [], []
    spans = shots_between(a.transitions, a.duration)
    for k, (s, e) in enumerate(spans):
        at_start = s > 1e-9
        at_end = e < a.duration - 1e-9
        ranges = options.plan.ranges(s, e, at_start=at_start, at_end=at_end)
        shot_records.append({"start": round(s, 6), "end": round(e, 6), "clips": len(ranges)})
        for start, end in ranges:
            first = int(np.searchsorted(times, start, side="right")) - 1
            last = max(first, int(np.searchsorted(times, end, side="left")) - 1)
            row = {"source": rel, "start": start, "end": end}
            if caption:
                row["caption"] = caption
            row["shot"] = k
            row.update(clip_scores(a.stats, max(first, 0), min(last, a.count - 1), a.size, a.analysed_size))
            rows.append(row)
    if options.export_clips and rows:
        from workbench.curate.export import export_clips

        try:
            export_clips(path, rows, Path(out))
        except Exception as e:  # noqa: BLE001
            return {"error": f"exporting clips: {(str(e).splitlines() or [type(e).__name__])[0][:200]}"}
    return {"duration": round(a.duration, 6), "size": list(a.size),
            "transitions": [[round(t.start, 6), round(t.end, 6), t.kind] for t in a.transitions],
            "shots": shot_records, "clips": len(rows), "rows": rows, "seconds": round(time.perf_counter() - t0, 3)}


@dataclass
class SplitResult:
    out: Path
    sources: int
    done_now: int
    skipped: int
    failed: dict[str, str]
    clips: int
    kept: int
    dropped: dict[str, int]
    short_shots: int
    short_seconds: float
    footage_seconds: float
    used_seconds: float

    def summary(self) -> str:
        lines = [f"{self.sources} sources ({self.done_now} split now, {self.skipped} already done"
                 + (f", {len(self.failed)} unreadable" if self.failed else "") + f"): {self.footage_seconds:.1f} s of "
                 f"footage, {self.clips} clips, {self.kept} kept ({self.used_seconds:.1f} s)"]
        if self.short_shots:
            lines.append(f"{self.short_shots} shots shorter than a clip (plus margins) are not used "
                         f"({self.short_seconds:.1f} s)")
        for reason, n in sorted(self.dropped.items()):
            lines.append(f"dropped {n}: {reason}")
        for rel, error in self.failed.items():
            lines.append(f"unreadable: {rel}: {error}")
        lines.append(f"manifest: {self.out / 'metadata.jsonl'} (state: {self.out / STATE})")
        return "\n".join(lines)


def _load_state(out: Path, fingerprint: dict, root: Path) -> dict:
    path = out / STATE
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # an unreadable state: start again (it is rewritten atomically, so only a hand edit does this)
    if state.get("footage_root") != str(root) or state.get("fingerprint") != fingerprint:
        return {}
    return state.get("sources", {})


def split_footage(src: str | Path, out: str | Path, options: SplitOptions, *, progress: bool = True,
                  warn=print) -> SplitResult:
    """Split every video under ``src`` into clips; write OUT's manifest and state. Resumable."""
    from tqdm.auto import tqdm

    from workbench.curate.quality import drop_reason, mark_duplicates

    try:
        root = Path(src).resolve()
        found = root.is_dir()
    except (OSError, ValueError):
        found = False
    if not found:
        raise UserError(f"{src}: footage folder not found; give the folder that holds the videos")
    try:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise UserError(f"{out}: exists and is not a folder; give another OUT")
        if out.resolve() == root:
            raise UserError(f"{out}: OUT must not be the footage folder (its metadata.jsonl would be overwritten)")
        (out / PARTS).mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:  # a NUL byte, a name too long, no permission, a file on the way
        raise UserError(f"{out}: cannot use it as OUT ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                        "give a folder that can be written") from None
    sources = list_sources(root, skip=out)  # OUT inside SRC: its exported clips are not footage
    if not sources:
        raise UserError(f"{src}: no videos found (looked for {', '.join(sorted(VIDEO_EXTENSIONS))}); "
                        "give the folder that holds the footage")
    fingerprint = options.fingerprint()
    done = _load_state(out, fingerprint, root)
    state = {"footage_root": str(root), "fingerprint": fingerprint,
             "clip": {"num_frames": options.plan.num_frames, "fps": options.plan.fps,
                      "seconds": options.plan.length},
             "options": {**fingerprint, "thresholds": options.thresholds,
                         "duplicate_distance": options.duplicate_distance}, "sources": {}}

    todo = []
    for rel, caption in sources:
        path = root / rel
        try:
            st = path.stat()
            stamp = [st.st_size, st.st_mtime_ns]
        except OSError:
            stamp = None
        record = done.get(rel)
        if (record and record.get("done") and record.get("stamp") == stamp and stamp is not None
                and record.get("caption") == caption
                and (record.get("error") or (out / PARTS / _part_name(rel)).exists())):
            state["sources"][rel] = record
            continue
        if stamp is None:
            state["sources"][rel] = {"done": True, "stamp": None, "caption": caption, "error": "file not found"}
            continue
        todo.append((rel, caption, stamp))

    failed_now: list[str] = []
    if todo:
        jobs = max(1, min(options.jobs or os.cpu_count() or 1, len(todo), os.cpu_count() or 1))
        bar = tqdm(total=len(todo), desc=f"splitting {root.name}", unit="file", disable=not progress,
                   dynamic_ncols=True)

        def finish(rel, caption, stamp, result):
            if "error" not in result:
                atomic_write_json(out / PARTS / _part_name(rel), {"source": rel, "rows": result.pop("rows")})
            else:
                failed_now.append(rel)
                line = f"warning: {rel}: {result['error']} (skipped; the run goes on)"
                bar.write(line, file=sys.stderr) if progress else warn(line)
            state["sources"][rel] = {"done": True, "stamp": stamp, "caption": caption, **result}
            atomic_write_json(out / STATE, state)
            bar.update(1)

        try:
            if jobs == 1:
                for rel, caption, stamp in todo:
                    finish(rel, caption, stamp, split_source(str(root / rel), rel, caption, options, str(out)))
            else:
                import multiprocessing

                ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds threads
                with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
                    futures = {pool.submit(split_source, str(root / rel), rel, caption, options, str(out)):
                               (rel, caption, stamp) for rel, caption, stamp in todo}
                    for fut in as_completed(futures):
                        rel, caption, stamp = futures[fut]
                        try:
                            result = fut.result()
                        except Exception as e:  # noqa: BLE001 - a worker that died (out of memory, a crash)
                            result = {"error": f"the decoder process died ({type(e).__name__})"}
                        finish(rel, caption, stamp, result)
        finally:
            bar.close()
    atomic_write_json(out / STATE, state)
    return _write_manifest(out, state, sources, options, len(todo), mark_duplicates, drop_reason)


def _write_manifest(out: Path, state: dict, sources, options: SplitOptions, done_now: int, mark_duplicates,
                    drop_reason) -> SplitResult:
    rows, failed = [], {}
    short = 0
    short_seconds = footage = 0.0
    sizes = {}
    for rel, _ in sources:
        record = state["sources"][rel]
        if record.get("error"):
            failed[rel] = record["error"]
            continue
        footage += record.get("duration", 0.0)
        sizes[rel] = tuple(record.get("size") or (0, 0))
        for shot in record.get("shots", []):
            if not shot["clips"]:
                short += 1
                short_seconds += shot["end"] - shot["start"]
        part = json.loads((out / PARTS / _part_name(rel)).read_text())
        rows += part["rows"]
    mark_duplicates(rows, options.duplicate_distance)
    kept, dropped_rows, dropped = [], [], {}
    for row in rows:
        reason = drop_reason(row, options.thresholds, sizes.get(row["source"]))
        if reason:
            dropped_rows.append({**row, "dropped": reason})
            key = reason.split(" (")[0]
            dropped[key] = dropped.get(key, 0) + 1
        else:
            kept.append(row)
    for r in kept + dropped_rows:
        r.pop("dhashes", None)
    atomic_write_text(out / "metadata.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    atomic_write_text(out / "dropped.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in dropped_rows))
    return SplitResult(out, len(sources), done_now, len(sources) - done_now, failed, len(rows), len(kept), dropped,
                       short, short_seconds, footage, sum(r["end"] - r["start"] for r in kept))
