"""``workbench data check``: read every entry of a dataset and report what training would trip on.

The per-sample checks are workbench.data.validate's; this module adds the dataset-level ones (manifest
readability, prompts/videos line counts, duplicates, caption length in tokens) and the report
(``report.json`` + ``report.md``). Mixed resolutions and frame rates are not problems; they are
summarised (histograms, which clips get cropped, upscaled or resampled) so the resize/crop and
frame-sampling policy of workbench.data.video holds no surprise.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from workbench.data.decoder_pool import DEFAULT_TIMEOUT_S
from workbench.data.footage import check_footage, score_distribution
from workbench.data.footage import markdown as footage_markdown
from workbench.data.manifest import ManifestError, find_manifest, read_lines, read_manifest
from workbench.data.validate import ERROR, WARNING, Issue, SampleResult, nearest_bucket, validate_entries

DEFAULT_MAX_TEXT_LEN = 226  # CogVideoX's max_text_seq_length


@dataclass
@dataclass
class Report:
    """Everything ``data check`` found; ``ok`` is False when anything is an error."""

    root: str
    layout: str | None
    recipe: dict
    tokenizer: str | None
    issues: list[Issue]
    samples: list[dict]
    summary: dict
    notes: list[str]

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == ERROR]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def counts(self) -> dict:
        def files_with(severity: str) -> int:
            return len({(i.where, i.file) for i in self.issues if i.severity == severity and i.where})

        return {"entries": len(self.samples), "errors": len(self.errors), "warnings": len(self.warnings),
                "samples_with_errors": files_with(ERROR), "samples_with_warnings": files_with(WARNING),
                "usable_samples": sum(s["usable"] for s in self.samples)}

    def to_dict(self) -> dict:
        return {"root": self.root, "manifest_layout": self.layout, "recipe": self.recipe, "tokenizer": self.tokenizer,
                "ok": self.ok, "counts": self.counts(), "issues": [asdict(i) for i in self.issues],
                "samples": self.samples, "summary": self.summary, "notes": self.notes}

    def to_markdown(self, max_issues: int | None = None) -> str:
        c = self.counts()
        r = self.recipe
        fps = f"{r['fps']:g} fps" if r.get("fps") else "consecutive frames"
        status = "FAILED" if not self.ok else ("OK, with warnings" if self.warnings else "OK")
        lines = [f"# Dataset check: {self.root}", "",
                 f"- manifest: {self.layout or 'unreadable'}, {c['entries']} entries, {c['usable_samples']} usable",
                 f"- recipe: {r['num_frames']} frames at {fps}, {r['width']}x{r['height']} (width x height)"
                 + (f", buckets {r['buckets']}" if r.get("buckets") else ""),
                 f"- result: **{status}**: {c['errors']} errors in {c['samples_with_errors']} samples, "
                 f"{c['warnings']} warnings in {c['samples_with_warnings']} samples", ""]
        for title, issues in (("Errors", self.errors), ("Warnings", self.warnings)):
            if not issues:
                continue
            lines += [f"## {title} ({len(issues)})", ""]
            shown = issues if max_issues is None else issues[:max_issues]
            lines += [f"- [{i.code}] {i.message}" for i in shown]
            if len(shown) < len(issues):
                lines.append(f"- ... {len(issues) - len(shown)} more in report.json")
            lines.append("")
        s = self.summary
        if s.get("resolutions"):
            lines += ["## Videos", "", "| width x height | clips |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in s["resolutions"].items()]
            lines += ["", "| fps | clips |", "|---|---|"] + [f"| {k} | {v} |" for k, v in s["fps"].items()]
            if s.get("buckets"):
                lines += ["", "| bucket (width x height) | clips |", "|---|---|"]
                lines += [f"| {k} | {v} |" for k, v in s["buckets"].items()]
            lines.append("")
        lines += footage_markdown(self.summary)
        if self.notes:
            lines += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(lines)

    def write(self, out_dir: str | Path) -> Path:
        """Write ``report.json`` and ``report.md`` into ``out_dir``; returns the JSON path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        (out / "report.md").write_text(safe_text(self.to_markdown()))
        return out / "report.json"



def load_tokenizer(model: str):
    """The T5 tokenizer of ``model`` (local diffusers directory or hub id, subfolder ``tokenizer``); a hub
    id that is neither cached nor reachable fails at once (ModelNotFound) instead of after retries."""
    from transformers import AutoTokenizer

    from workbench.model.loading import check_hub_model

    local = Path(model) / "tokenizer"
    if local.is_dir():
        return AutoTokenizer.from_pretrained(str(local))
    check_hub_model(model, "tokenizer/tokenizer_config.json")
    return AutoTokenizer.from_pretrained(model, subfolder="tokenizer")


def _manifest_issue(root: Path, error: ManifestError) -> Issue:
    cause = error.__cause__
    if isinstance(cause, UnicodeDecodeError):
        name = str(error).split(":")[0]
        data = cause.object
        line = data[: cause.start].count(b"\n") + 1
        column = cause.start - (data.rfind(b"\n", 0, cause.start) + 1) + 1
        rel = os.path.relpath(name, root)
        return Issue(rel, f"{rel}:{line}", ERROR, "manifest_not_utf8",
                     f"{rel}:{line}: not UTF-8 (byte 0x{data[cause.start]:02x} at column {column}); re-save the "
                     "file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    return Issue("manifest", "", ERROR, "manifest_unreadable", str(error))


def _line_count_issue(root: Path) -> Issue | None:
    """prompts.txt + videos.txt of different lengths: the reader pairs them line by line."""
    try:  # split as the reader splits them (line ends only)
        prompts, videos = read_lines(root / "prompts.txt"), read_lines(root / "videos.txt")
    except (OSError, ManifestError):
        return None
    while prompts and not prompts[-1].strip():
        prompts.pop()
    while videos and not videos[-1].strip():
        videos.pop()
    if len(prompts) == len(videos):
        return None
    return Issue("prompts.txt", "prompts.txt", ERROR if len(prompts) > len(videos) else WARNING, "line_count_mismatch",
                 f"prompts.txt has {len(prompts)} lines but videos.txt has {len(videos)}: line N of each belong "
                 "together, so every pair after the first missing line may be mismatched; make them the same length")


def check_dataset(root: str | Path, num_frames: int, fps: float | None, height: int, width: int, tokenizer=None,
                  max_text_len: int = DEFAULT_MAX_TEXT_LEN, *, buckets: list[list[int]] | None = None,
                  decode: bool = True, jobs: int | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                  progress: bool = True) -> Report:
    """Check every entry of the dataset at ``root`` against a recipe's data settings.

    ``tokenizer``: a tokenizer, or a model (path or hub id) to load one from, for the caption-length
    check (skipped, and said so in the notes, without one). Never raises for a bad dataset: an
    unreadable manifest is a dataset-level error in the report.
    """
    root = Path(root)
    recipe = {"num_frames": num_frames, "fps": fps, "height": height, "width": width, "max_text_len": max_text_len,
              "buckets": [list(b) for b in buckets] if buckets else None}
    notes: list[str] = []
    tokenizer_name = None
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer_name = str(tokenizer)
        try:
            tokenizer = load_tokenizer(str(tokenizer))
        except Exception as e:  # no network, no such model, no tokenizer folder...
            notes.append(f"caption length NOT checked: could not load a tokenizer from {tokenizer_name} "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})")
            tokenizer = None
    elif tokenizer is not None:
        tokenizer_name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    if tokenizer is None and not notes:
        notes.append("caption length NOT checked: no tokenizer (pass --model or a recipe with model.model)")

    layout = None
    try:
        layout = find_manifest(root)
        entries = read_manifest(root)
    except ManifestError as e:
        return Report(str(root), layout, recipe, tokenizer_name, [_manifest_issue(root, e)], [], {}, notes)

    dataset_issues = []
    if layout == "prompts.txt + videos.txt" and (issue := _line_count_issue(root)) is not None:
        dataset_issues.append(issue)

    results = validate_entries(root, entries, num_frames, fps, decode=decode, jobs=jobs, timeout=timeout,
                               progress=progress, clip=(height, width) if height and width else None,
                               buckets=[tuple(b) for b in buckets] if buckets else None)
    _check_duplicates(results)
    footage_notes, footage_summary = [], None
    if decode:  # shot boundaries inside the samples' windows, unused footage (workbench/data/footage.py)
        footage_notes, footage_summary = check_footage(root, results, num_frames, fps, jobs=jobs, progress=progress)
    token_counts = _check_caption_lengths(results, tokenizer, max_text_len)
    samples, summary, more_notes = _summarise(results, num_frames, fps, height, width, buckets, token_counts)
    summary.update(footage=footage_summary, quality=score_distribution(root) or None)
    more_notes += footage_notes
    issues = dataset_issues + [i for r in results for i in r.issues]
    return Report(str(root), layout, recipe, tokenizer_name, issues, samples, summary, notes + more_notes)


def _check_duplicates(results: list[SampleResult]) -> None:
    seen_path: dict[str, SampleResult] = {}
    seen_hash: dict[str, SampleResult] = {}
    for r in results:
        key = os.path.normpath(r.entry.file_name) + r.entry.key[len(r.entry.file_name):]  # a range: its own sample
        if r.entry.file_name.strip() and key in seen_path:
            first = seen_path[key]
            r.add(WARNING, "duplicate_entry", f"listed again (first at {first.entry.where}): it is seen twice per "
                  "epoch; remove one row unless that is intended")
            continue
        seen_path.setdefault(key, r)
        if r.sha256 is not None and r.entry.range is None:  # ranges of one footage file share its bytes
            if r.sha256 in seen_hash:
                first = seen_hash[r.sha256]
                r.add(WARNING, "duplicate_content", f"same bytes (sha256 {r.sha256[:12]}) as {first.entry.file_name} "
                      f"({first.entry.where}): remove one copy")
            else:
                seen_hash[r.sha256] = r


def _check_caption_lengths(results: list[SampleResult], tokenizer, max_text_len: int) -> dict[int, int]:
    """Token counts by result index (the same count the training module warns on)."""
    counts = {}
    if tokenizer is None:
        return counts
    for n, r in enumerate(results):
        caption = r.entry.caption
        if caption is None or any(i.code == "caption_not_utf8" for i in r.issues):
            continue
        try:
            counts[n] = len(tokenizer(caption).input_ids)
        except Exception as e:  # the training module would fail on it the same way
            r.add(ERROR, "check_failed", f"the tokenizer fails on this caption ({type(e).__name__}: {e})")
            continue
        if counts[n] > max_text_len:
            r.add(WARNING, "caption_too_long", f"caption is {counts[n]} tokens; the model reads {max_text_len}, "
                  f"the rest is truncated: shorten it (it starts {caption[:40]!r})")
    return counts


def _summarise(results, num_frames, fps, height, width, buckets, token_counts):
    """Per-sample records, histograms of sizes and frame rates, and what resizing/resampling does."""
    targets = [tuple(b) for b in buckets] if buckets else [(height, width)]
    resolutions, rates, bucket_counts = Counter(), Counter(), Counter()
    cropped = upscaled = resampled = 0
    samples = []
    for n, r in enumerate(results):
        record = {"file": r.entry.key, "where": r.entry.where, "caption": r.entry.caption, "usable": r.usable,
                  "issues": [i.code for i in r.issues], "size_bytes": r.size_bytes, "sha256": r.sha256,
                  "video": None if r.height is None else {"num_frames": r.num_frames, "fps": r.fps, "width": r.width,
                                                          "height": r.height}}
        if n in token_counts:
            record["caption_tokens"] = token_counts[n]
        if r.height:
            resolutions[f"{r.width}x{r.height}"] += 1
            rates[f"{r.fps:g}"] += 1
            th, tw = targets[nearest_bucket(r.height, r.width, targets)]
            if buckets:
                bucket_counts[f"{tw}x{th}"] += 1
            scale = max(th / r.height, tw / r.width)
            crop = (round(r.height * scale) != th) or (round(r.width * scale) != tw)
            record["target"] = {"width": tw, "height": th, "resized": (r.height, r.width) != (th, tw), "cropped": crop,
                                "upscaled": scale > 1.0, "fps_resampled": bool(fps) and abs(r.fps - fps) > 1e-3}
            cropped += crop
            upscaled += scale > 1.0
            resampled += record["target"]["fps_resampled"]
        samples.append(record)
    decoded = sum(resolutions.values())
    summary = {"resolutions": dict(resolutions.most_common()), "fps": dict(rates.most_common()),
               "buckets": dict(bucket_counts.most_common()) if buckets else None,
               "frames": _stats([r.num_frames for r in results if r.num_frames]),
               "duration_s": _stats([r.num_frames / r.fps for r in results if r.num_frames and r.fps]),
               "cropped": cropped, "upscaled": upscaled, "fps_resampled": resampled}
    notes = []
    target = "its bucket" if buckets else f"{width}x{height}"
    if len(resolutions) > 1:
        notes.append(f"mixed resolutions ({len(resolutions)} sizes): every clip is scaled to cover {target} "
                     "(aspect kept) and centre-cropped")
    if cropped:
        notes.append(f"{cropped} of {decoded} clips have another aspect ratio than {target} and lose their edges "
                     "to the centre crop" + ("" if buckets else " (aspect-ratio buckets: data.buckets)"))
    if upscaled:
        notes.append(f"{upscaled} of {decoded} clips are smaller than {target} and are upscaled (softer frames)")
    if len(rates) > 1 or resampled:
        notes.append(f"{resampled} of {decoded} clips are resampled to {fps:g} fps (frames taken from the centre of "
                     "each clip at the recipe's fps, see workbench/data/video.py)" if fps else
                     "fps is not resampled (data.fps: null): clips of different fps play at different speeds")
    return samples, summary, notes


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    values = sorted(values)
    return {"min": round(values[0], 3), "median": round(values[len(values) // 2], 3), "max": round(values[-1], 3)}




def safe_text(text: str) -> str:
    """``text`` with unpaired surrogates (from JSON escapes in a manifest) escaped, so it can be written."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
