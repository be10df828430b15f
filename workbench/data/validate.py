"""Per-sample validation: what makes one manifest entry unusable for training, or suspicious.

Each problem is an :class:`Issue` with a severity (``error``: the sample is unusable, training stops
on it or ``on_bad_sample: skip`` drops it; ``warning``: it trains, but probably not as intended), a
reason code and a message naming the file and the fix. ``workbench data check`` (workbench.data.check)
reports them for a whole dataset; the data module runs the same :func:`validate_entries` in its setup
when ``on_bad_sample: skip`` or buckets need it, and :data:`UNUSABLE` are the codes that drop a sample.
"""

from __future__ import annotations

import math
import os
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from workbench.common import ImageUnreadable, file_sha256, open_rgb_image
from workbench.data.decoder_pool import DEFAULT_TIMEOUT_S, DecoderPool
from workbench.data.manifest import Entry, PathOutsideRoot
from workbench.data.sniff import container_kind, mp4_without_moov, not_video_reason

ERROR, WARNING = "error", "warning"

UNUSABLE = frozenset({
    "missing_file_name", "path_outside_root", "missing_file", "not_a_file", "zero_length", "not_video",
    "corrupt", "unsupported_codec", "decoder_crash", "decoder_timeout", "no_frames", "unknown_fps", "too_short",
    "missing_caption", "caption_not_utf8", "check_failed", "missing_image", "bad_image",
})



@dataclass


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
        self.issues.append(Issue(self.entry.key, self.entry.where, severity, code,
                                 f"{self.entry.key or '<empty>'}{where}: {text}"))


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
    try:
        result.entry.path(root)  # the dataset root is a boundary for every reader (workbench.data.manifest)
    except PathOutsideRoot as e:
        result.add(ERROR, "path_outside_root", e.reason)
        return None
    return result.entry.path(root).resolve()  # a range row's source may live under the footage root


def _check_file(result: SampleResult, root: Path, num_frames: int, fps: float | None, pool: DecoderPool,
                decode: bool) -> None:
    path = _check_path(result, root)
    if path is None:
        return
    try:
        st = path.stat()
    except FileNotFoundError:
        hint = "; manifest paths use '/' separators" if "\\" in result.entry.file_name else ""
        under = root if result.entry.base is None else Path(root) / result.entry.base
        result.add(ERROR, "missing_file", f"file not found under {under}{hint}: fix the path or remove the row")
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
        result.sha256 = file_sha256(path)
    except OSError as e:
        result.add(ERROR, "missing_file", f"cannot be read ({e.strerror}): fix its permissions or remove the row")
        return

    info = pool.probe(path, num_frames, fps, decode, result.entry.start, result.entry.end)
    if "num_frames" in info:  # opened, even if its frames then failed to decode
        result.num_frames, result.fps = info["num_frames"], info["fps"]
        if "range_num_frames" in info:  # a range row: the sample is the range's frames, checked as such
            result.num_frames, result.fps = info["range_num_frames"], info["range_fps"]
        result.height, result.width = info["height"], info["width"]
    if not info.get("ok"):
        _report_undecodable(result, path, head, info)
    elif result.num_frames < 1 and result.entry.range is None:
        result.add(ERROR, "no_frames", "the video has no frames: re-encode it or remove the row")
    elif result.fps <= 0 and fps:
        result.add(ERROR, "unknown_fps", "the container reports no frame rate, so frames cannot be sampled at "
                   f"{fps:g} fps: re-encode it with a frame rate (ffmpeg -r)")
    else:
        if info.get("vfr"):
            result.add(WARNING, "vfr", f"variable frame rate ({info['fps_min']:.3g} to {info['fps_max']:.3g} fps): "
                       "frames are taken by presentation time")
        _check_length(result, num_frames, fps)


def _check_image(result: SampleResult, root: Path) -> None:
    """An image-to-video entry's conditioning image: inside the root, present, decodable (PIL)."""
    entry = result.entry
    if entry.image is None:
        return
    try:
        path = entry.image_path(root)
    except PathOutsideRoot as e:
        result.add(ERROR, "path_outside_root", e.reason)
        return
    if not path.is_file():
        result.add(ERROR, "missing_image", f"image {entry.image} not found under {root}: fix the path or remove it "
                   "(without one, the clip's first frame conditions)")
        return
    try:
        w, h = open_rgb_image(path).size
    except (ImageUnreadable, OSError) as e:
        result.add(ERROR, "bad_image", f"image {entry.image} is not a readable image ({e}): replace it with a PNG or "
                   "JPEG")
        return
    if result.height and result.width and abs(w / h - result.width / result.height) > 0.01:
        result.add(WARNING, "image_aspect", f"image {entry.image} is {w}x{h}, the video {result.width}x{result.height}: "
                   "another aspect ratio, so the centre crop to the clip's size cuts them differently")


def _report_undecodable(result: SampleResult, path: Path, head: bytes, info: dict) -> None:
    code, error = info.get("code"), info.get("error", "unknown error")
    fix = "re-encode it (ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4) or remove the row"
    if code in ("decoder_crash", "decoder_timeout"):
        result.add(ERROR, code, f"{error} on this file: {fix}")
        return
    if code == "unsupported_codec":  # the error names the codec and the re-encode command
        result.add(ERROR, code, f"{error}; or remove the row")
        return
    not_video = not_video_reason(head)
    if not_video:
        result.add(ERROR, "not_video", f"{not_video}; replace it with the video or remove the row")
    elif container_kind(head) == "mp4/mov" and mp4_without_moov(path):
        result.add(ERROR, "corrupt", f"truncated mp4: it ends before its 'moov' index ({result.size_bytes} bytes; "
                   "an incomplete download or copy): copy it again")
    else:
        stage = "frames cannot be decoded" if info.get("opened") else "cannot be opened"
        result.add(ERROR, "corrupt", f"corrupt video: {stage} ({error}): {fix}")


def _check_length(result: SampleResult, num_frames: int, fps: float | None) -> None:
    """Too short for the recipe, by the rule training uses (frame_indices_at_fps)."""
    from workbench.data.video import VideoError, frame_indices_at_fps

    try:
        frame_indices_at_fps(result.num_frames, result.fps, num_frames, fps)
    except VideoError:
        have = result.num_frames / result.fps if result.fps else 0.0
        if fps:
            need = f"{num_frames} frames at {fps:g} fps ({(num_frames - 1) / fps:.1f} s)"
        else:
            need = f"{num_frames} consecutive frames"
        span = result.entry.range
        what = "" if span is None else f"range {span[0]:.3f}-{span[1]:.3f} s has "
        longer = "a longer clip" if span is None else "a longer range"
        result.add(ERROR, "too_short", f"{what}{result.num_frames} frames at {result.fps:g} fps ({have:.2f} s); "
                   f"recipe needs {need}: use {longer}, or lower data.num_frames / data.fps")
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
            _check_image(result, root)
        except Exception as e:  # a path the OS rejects (NUL byte, too long...): name it, check the others
            result.add(ERROR, "check_failed", f"could not be checked ({type(e).__name__}: {e}): fix the manifest row")
        return result

    with DecoderPool(jobs, timeout) as pool, ThreadPoolExecutor(jobs) as threads:
        results = list(tqdm(threads.map(one, entries), total=len(entries), desc=f"checking {root.name or root}",
                            unit="clip", disable=not progress))
    return results



def nearest_bucket(height: int, width: int, buckets: list[tuple[int, int]]) -> int:
    """Index of the bucket whose aspect ratio is closest to ``width / height`` (in log ratio)."""
    ratio = math.log(width / height)
    return min(range(len(buckets)), key=lambda i: abs(math.log(buckets[i][1] / buckets[i][0]) - ratio))
