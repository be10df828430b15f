"""``workbench data check``: read every entry of a dataset and report what training would trip on.

Each problem is an :class:`Issue` with a severity (``error``: the sample is unusable, training
stops on it or ``on_bad_sample: skip`` drops it; ``warning``: it trains, but probably not as
intended), a reason code and a message naming the file and the fix. Mixed resolutions and frame
rates are not problems; they are summarised (histograms, which clips get cropped, upscaled or
resampled) so the resize/crop and frame-sampling policy of workbench.data.video holds no surprise.

Videos are opened by decord in a separate worker process (:class:`DecoderPool`): decord raises on
most bad input, but it is known to abort the process (an uncaught C++ error in its decoder thread)
or segfault on some corrupt files (dmlc/decord#25, #99, #229), and a hung decode must not hang the
check. A worker that dies or overruns its timeout is reported for that file and replaced.

The same per-sample validation (:func:`validate_entries`) runs once in the data module's setup
when ``on_bad_sample: skip``; :data:`UNUSABLE` are the reason codes that drop a sample there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.data.manifest import Entry, ManifestError, find_manifest, read_manifest

ERROR, WARNING = "error", "warning"

# Reason codes that make a sample unusable: `on_bad_sample: skip` drops exactly these.
UNUSABLE = frozenset({
    "missing_file_name", "path_outside_root", "missing_file", "not_a_file", "zero_length", "not_video",
    "corrupt", "decoder_crash", "decoder_timeout", "decoder_bad_width", "no_frames", "unknown_fps", "too_short",
    "missing_caption", "caption_not_utf8", "check_failed",
})

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_TEXT_LEN = 226  # CogVideoX's max_text_seq_length


@dataclass
class Issue:
    """One problem with one sample (or with the dataset as a whole, when ``file`` is the manifest)."""

    file: str
    where: str
    severity: str
    code: str
    message: str


@dataclass
class SampleResult:
    """What validating one manifest entry found: its issues and, when it decoded, its video's shape."""

    entry: Entry
    issues: list[Issue] = field(default_factory=list)
    num_frames: int | None = None
    fps: float | None = None
    height: int | None = None
    width: int | None = None
    size_bytes: int | None = None
    sha256: str | None = None

    @property
    def usable(self) -> bool:
        return not any(i.code in UNUSABLE for i in self.issues)

    @property
    def reason(self) -> str:
        """The first unusable issue's message ('' when usable)."""
        return next((i.message for i in self.issues if i.code in UNUSABLE), "")

    @property
    def code(self) -> str:
        """The first unusable issue's reason code ('' when usable)."""
        return next((i.code for i in self.issues if i.code in UNUSABLE), "")

    def add(self, severity: str, code: str, text: str) -> None:
        where = f" ({self.entry.where})" if self.entry.where else ""
        self.issues.append(Issue(self.entry.file_name, self.entry.where, severity, code,
                                 f"{self.entry.file_name or '<empty>'}{where}: {text}"))


# -- the decoder worker ---------------------------------------------------------------------------
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
            [sys.executable, "-c", "from workbench.data.check import _serve; _serve()"],
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
        from workbench.data.video import VideoError, sample_frame_indices

        worker = self.free.get()
        try:
            info = worker.request({"op": "open", "path": str(path)})
            if not info.get("ok") or not decode or info["num_frames"] < 1 or info["fps"] <= 0:
                return info
            try:
                indices = sample_frame_indices(info["num_frames"], info["fps"], num_frames, fps)
            except VideoError:
                return info  # too short: reported from the frame count, nothing to decode
            decoded = worker.request({"op": "decode", "indices": indices})
            return info if decoded.get("ok") else {**info, **decoded, "ok": False, "opened": True}
        finally:
            self.free.put(worker)


# -- sniffing what a file is ----------------------------------------------------------------------
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")


def _container(head: bytes) -> str | None:
    """The video container ``head`` (the first bytes of a file) starts, or None."""
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return "mp4/mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "mkv/webm"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith((b"FLV", b"OggS", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3", b"GIF8", b"\x30\x26\xb2\x75")):
        return "video"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpeg-ts"
    return None


def _not_video_reason(head: bytes) -> str | None:
    """What a file that is no video container looks like, or None if it may be a video."""
    if _container(head) is not None:
        return None
    if head.startswith(b"version https://git-lfs"):
        return "is a Git LFS pointer, not the video: run `git lfs pull` in the dataset repository"
    images = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"BM": "a BMP image"}
    for magic, what in images.items():
        if head.startswith(magic):
            return f"is {what}, not a video"
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml")):
        return "is an HTML/XML page, not a video (a failed download?): download the video itself"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"is a text file, not a video (starts {text[:40].strip()!r})"
    return None


def _mp4_without_moov(path: Path) -> bool:
    """True for an mp4 whose top-level boxes end before its 'moov' index (a truncated file)."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            pos = 0
            while pos + 8 <= size:
                f.seek(pos)
                header = f.read(16)
                box_size, kind = int.from_bytes(header[:4], "big"), header[4:8]
                if kind == b"moov":
                    return False
                if box_size == 1 and len(header) == 16:
                    box_size = int.from_bytes(header[8:16], "big")
                if box_size < 8:
                    return box_size != 0  # 0 = box runs to the end of file
                pos += box_size
            return True
    except OSError:
        return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- per-sample validation ------------------------------------------------------------------------
def _check_caption(result: SampleResult) -> None:
    caption = result.entry.caption
    if caption is None:
        result.add(ERROR, "missing_caption",
                   f"missing or empty caption: add one at {result.entry.where or 'its manifest row'}")
        return
    try:
        caption.encode("utf-8")
    except UnicodeEncodeError as e:
        result.add(ERROR, "caption_not_utf8", f"caption is not valid Unicode text (unpaired surrogate "
                   f"U+{ord(caption[e.start]):04X} at character {e.start}): fix the escape in the manifest")
        return
    controls = [(i, c) for i, c in enumerate(caption) if unicodedata.category(c) == "Cc"]
    if controls:
        i, c = controls[0]
        result.add(WARNING, "caption_control_chars", f"caption has {len(controls)} control character(s) "
                   f"(first U+{ord(c):04X} at character {i}): remove them")
    if "\ufffd" in caption:
        result.add(WARNING, "caption_replacement_chars", "caption contains U+FFFD replacement characters (text "
                   "that was mis-decoded before it was written): fix the source text")


def _check_path(result: SampleResult, root: Path) -> Path | None:
    """The resolved file of a sample, or None after recording why it cannot be read."""
    name = result.entry.file_name
    if not name.strip():
        result.add(ERROR, "missing_file_name", "empty file name in the manifest row")
        return None
    real_root = root.resolve()
    if Path(name).is_absolute():
        result.add(ERROR, "path_outside_root", f"absolute path; manifest paths must be relative to the dataset "
                   f"root ({root}): copy the file into the dataset folder and list it relative to it")
        return None
    lexical = Path(os.path.normpath(real_root / name))
    if not lexical.is_relative_to(real_root):
        result.add(ERROR, "path_outside_root", f"path leaves the dataset root ({root}): copy the file into the "
                   "dataset folder and list it relative to it")
        return None
    path = (real_root / name).resolve()
    if not path.is_relative_to(real_root):
        result.add(ERROR, "path_outside_root", f"is a symlink to {path}, outside the dataset root ({root}): copy "
                   "the file into the dataset folder (the dataset must be self-contained)")
        return None
    return path


def _check_file(result: SampleResult, root: Path, num_frames: int, fps: float | None, pool: DecoderPool,
                decode: bool) -> None:
    path = _check_path(result, root)
    if path is None:
        return
    try:
        st = path.stat()
    except FileNotFoundError:
        hint = "; manifest paths use '/' separators" if "\\" in result.entry.file_name else ""
        result.add(ERROR, "missing_file", f"file not found under {root}{hint}: fix the path or remove the row")
        return
    except OSError as e:
        result.add(ERROR, "missing_file", f"cannot be read ({e.strerror}): fix its permissions or remove the row")
        return
    if not stat.S_ISREG(st.st_mode):
        result.add(ERROR, "not_a_file", "is not a regular file (a directory or device): list video files only")
        return
    result.size_bytes = st.st_size
    if st.st_size == 0:
        result.add(ERROR, "zero_length", "zero-length file (0 bytes): re-copy or re-download it, or remove the row")
        return
    try:
        with path.open("rb") as f:
            head = f.read(512)
        result.sha256 = _sha256(path)
    except OSError as e:
        result.add(ERROR, "missing_file", f"cannot be read ({e.strerror}): fix its permissions or remove the row")
        return

    info = pool.probe(path, num_frames, fps, decode)
    if "num_frames" in info:  # opened, even if its frames then failed to decode
        result.num_frames, result.fps = info["num_frames"], info["fps"]
        result.height, result.width = info["height"], info["width"]
    if info.get("channels", 3) != 3:
        # decord 0.6 returns misshaped RGB frames at a few widths (16, 24, 48, 72 px seen) and then fails to decode
        result.add(ERROR, "decoder_bad_width", f"decord cannot decode frames {result.width} px wide (it returns "
                   f"{info['channels']}-channel frames, a decord bug at some small widths): re-encode it at another "
                   "width, e.g. ffmpeg -i IN -vf scale=64:-2 OUT.mp4")
    elif not info.get("ok"):
        _report_undecodable(result, path, head, info)
    elif result.num_frames < 1:
        result.add(ERROR, "no_frames", "the video has no frames: re-encode it or remove the row")
    elif result.fps <= 0 and fps:
        result.add(ERROR, "unknown_fps", "the container reports no frame rate, so frames cannot be sampled at "
                   f"{fps:g} fps: re-encode it with a frame rate (ffmpeg -r)")
    else:
        _check_length(result, num_frames, fps)


def _report_undecodable(result: SampleResult, path: Path, head: bytes, info: dict) -> None:
    code, error = info.get("code"), info.get("error", "unknown error")
    fix = "re-encode it (ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4) or remove the row"
    if code in ("decoder_crash", "decoder_timeout"):
        result.add(ERROR, code, f"{error} on this file: {fix}")
        return
    not_video = _not_video_reason(head)
    if not_video:
        result.add(ERROR, "not_video", f"{not_video}; replace it with the video or remove the row")
    elif _container(head) == "mp4/mov" and _mp4_without_moov(path):
        result.add(ERROR, "corrupt", f"truncated mp4: it ends before its 'moov' index ({result.size_bytes} bytes; "
                   "an incomplete download or copy): copy it again")
    else:
        stage = "frames cannot be decoded" if info.get("opened") else "cannot be opened"
        result.add(ERROR, "corrupt", f"corrupt video: {stage} ({error}): {fix}")


def _check_length(result: SampleResult, num_frames: int, fps: float | None) -> None:
    """Too short for the recipe, by the rule training uses (sample_frame_indices)."""
    from workbench.data.video import VideoError, sample_frame_indices

    try:
        sample_frame_indices(result.num_frames, result.fps, num_frames, fps)
    except VideoError:
        have = result.num_frames / result.fps if result.fps else 0.0
        if fps:
            need = f"{num_frames} frames at {fps:g} fps ({(num_frames - 1) / fps:.1f} s)"
        else:
            need = f"{num_frames} consecutive frames"
        result.add(ERROR, "too_short", f"{result.num_frames} frames at {result.fps:g} fps ({have:.2f} s); recipe "
                   f"needs {need}: use a longer clip, or lower data.num_frames / data.fps")
        return
    if fps and result.fps < fps - 1e-3:
        result.add(WARNING, "low_fps", f"{result.fps:g} fps source sampled at {fps:g} fps: frames repeat (motion "
                   "looks stepped); lower data.fps or use higher frame-rate clips")


def validate_entries(root: str | Path, entries: list[Entry], num_frames: int, fps: float | None, *,
                     decode: bool = True, jobs: int | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                     progress: bool = True) -> list[SampleResult]:
    """Per-sample checks for every entry (caption, path, file, decode, length), in manifest order.

    ``decode`` also decodes the frames training would take (catches files corrupt past their
    header). Decoding runs in ``jobs`` worker processes, each call bounded by ``timeout`` seconds.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    root = Path(root)
    jobs = jobs or min(4, os.cpu_count() or 1)

    def one(entry: Entry) -> SampleResult:
        result = SampleResult(entry)
        try:
            _check_caption(result)
            _check_file(result, root, num_frames, fps, pool, decode)
        except Exception as e:  # a path the OS rejects (NUL byte, too long...): name it, check the others
            result.add(ERROR, "check_failed", f"could not be checked ({type(e).__name__}: {e}): fix the manifest row")
        return result

    with DecoderPool(jobs, timeout) as pool, ThreadPoolExecutor(jobs) as threads:
        results = list(tqdm(threads.map(one, entries), total=len(entries), desc=f"checking {root.name or root}",
                            unit="clip", disable=not progress))
    return results


# -- the dataset report ---------------------------------------------------------------------------
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
        if self.notes:
            lines += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(lines)

    def write(self, out_dir: str | Path) -> Path:
        """Write ``report.json`` and ``report.md`` into ``out_dir``; returns the JSON path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        (out / "report.md").write_text(_safe(self.to_markdown()))
        return out / "report.json"


def load_tokenizer(model: str):
    """The T5 tokenizer of ``model`` (local diffusers directory or hub id, subfolder ``tokenizer``)."""
    from transformers import AutoTokenizer

    local = Path(model) / "tokenizer"
    if local.is_dir():
        return AutoTokenizer.from_pretrained(str(local))
    return AutoTokenizer.from_pretrained(model, subfolder="tokenizer")


def model_max_text_len(model: str) -> int:
    """``max_text_seq_length`` from a local model's transformer config, else CogVideoX's 226."""
    config = Path(model) / "transformer" / "config.json"
    try:
        return int(json.loads(config.read_text())["max_text_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_MAX_TEXT_LEN


def nearest_bucket(height: int, width: int, buckets: list[tuple[int, int]]) -> int:
    """Index of the bucket whose aspect ratio is closest to ``width / height`` (in log ratio)."""
    import math

    ratio = math.log(width / height)
    return min(range(len(buckets)), key=lambda i: abs(math.log(buckets[i][1] / buckets[i][0]) - ratio))


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
    try:
        prompts = [p for p in (root / "prompts.txt").read_text("utf-8").splitlines()]
        videos = (root / "videos.txt").read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
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
                               progress=progress)
    _check_duplicates(results)
    token_counts = _check_caption_lengths(results, tokenizer, max_text_len)
    samples, summary, more_notes = _summarise(results, num_frames, fps, height, width, buckets, token_counts)
    issues = dataset_issues + [i for r in results for i in r.issues]
    return Report(str(root), layout, recipe, tokenizer_name, issues, samples, summary, notes + more_notes)


def _check_duplicates(results: list[SampleResult]) -> None:
    seen_path: dict[str, SampleResult] = {}
    seen_hash: dict[str, SampleResult] = {}
    for r in results:
        key = os.path.normpath(r.entry.file_name)
        if r.entry.file_name.strip() and key in seen_path:
            first = seen_path[key]
            r.add(WARNING, "duplicate_entry", f"listed again (first at {first.entry.where}): it is seen twice per "
                  "epoch; remove one row unless that is intended")
            continue
        seen_path.setdefault(key, r)
        if r.sha256 is not None:
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
        record = {"file": r.entry.file_name, "where": r.entry.where, "caption": r.entry.caption, "usable": r.usable,
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


# -- command line ---------------------------------------------------------------------------------
def add_cli(data_subparsers) -> None:
    """Register ``check`` under ``workbench data``."""
    p = data_subparsers.add_parser(
        "check", help="check every video and caption of a dataset against a recipe; writes report.json/.md",
        description="Read every manifest entry, decode every video and report what training would trip on. "
        "Exit status 0: clean or warnings only; 1: errors; 2: usage error.")
    p.add_argument("root", help="dataset folder (metadata.jsonl, metadata.csv or prompts.txt + videos.txt)")
    p.add_argument("--recipe", help="recipe YAML: data.num_frames/fps/height/width/buckets and model.model "
                   "come from it")
    p.add_argument("--num-frames", type=int, help="frames per sample (default 49, or the recipe's)")
    p.add_argument("--fps", type=float, help="frame rate frames are sampled at (default 8, or the recipe's)")
    p.add_argument("--height", type=int, help="training height (default 480, or the recipe's)")
    p.add_argument("--width", type=int, help="training width (default 720, or the recipe's)")
    p.add_argument("--model", help="model (local dir or hub id) whose tokenizer measures caption length")
    p.add_argument("--max-text-len", type=int, help="tokens the model reads (default: the model's, else 226)")
    p.add_argument("--out", default="data-check", help="folder for report.json and report.md (default ./data-check)")
    p.add_argument("--jobs", type=int, default=None, help="decoder processes (default min(4, CPUs))")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds before a decode counts as hung")
    p.set_defaults(func=cmd_data_check)


def cmd_data_check(ns: argparse.Namespace) -> int:
    """Handler of ``workbench data check``: 0 clean or warnings only, 1 errors, 2 usage errors."""
    settings = {"num_frames": 49, "fps": 8.0, "height": 480, "width": 720, "buckets": None}
    model = ns.model
    if ns.recipe:
        try:
            settings, model = _recipe_settings(Path(ns.recipe), settings, model)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    for key in ("num_frames", "fps", "height", "width"):
        if getattr(ns, key) is not None:
            settings[key] = getattr(ns, key)
    root = Path(ns.root)
    if not root.is_dir():
        print(f"error: {root}: dataset folder not found", file=sys.stderr)
        return 2
    from workbench.data.video import check_frame_count, check_resolution

    try:
        check_frame_count(settings["num_frames"])
        for h, w in settings["buckets"] or [(settings["height"], settings["width"])]:
            check_resolution(h, w)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    max_text_len = ns.max_text_len or (model_max_text_len(model) if model else DEFAULT_MAX_TEXT_LEN)
    report = check_dataset(root, settings["num_frames"], settings["fps"], settings["height"], settings["width"],
                           tokenizer=model, max_text_len=max_text_len, buckets=settings["buckets"], jobs=ns.jobs,
                           timeout=ns.timeout)
    path = report.write(ns.out)
    print(_safe(report.to_markdown(max_issues=30)))
    print(f"report: {path} (and report.md)")
    return 0 if report.ok else 1


def _safe(text: str) -> str:
    """``text`` with unpaired surrogates (from JSON escapes in a manifest) escaped, so it can be written."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _recipe_settings(recipe: Path, settings: dict, model: str | None) -> tuple[dict, str | None]:
    import yaml

    if not recipe.is_file():
        raise ValueError(f"{recipe}: recipe not found")
    config = yaml.safe_load(recipe.read_text()) or {}
    data = config.get("data") or {}
    settings = dict(settings)
    for key in settings:
        if key in data and (data[key] is not None or key in ("fps", "buckets")):  # fps: null = consecutive frames
            settings[key] = data[key]
    return settings, model or (config.get("model") or {}).get("model")
