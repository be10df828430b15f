"""Dataset manifests: which video goes with which caption.

Two layouts are read (documented in datasets/README.md):

* ``metadata.jsonl`` or ``metadata.csv`` with ``file_name`` and ``caption`` columns
  (the Hugging Face videofolder layout);
* ``prompts.txt`` + ``videos.txt``, one entry a line, line N of each belonging together
  (the CogVideo repo's finetune layout).

Image-to-video datasets may name each clip's conditioning image: an ``image`` column (jsonl/csv) or an
``images.txt`` beside ``videos.txt``, paths inside the dataset root like the videos'. Without one, an
image-to-video model is conditioned on the clip's first sampled frame.

Range rows (jsonl/csv): ``source``, ``start``, ``end`` and no ``file_name`` name a span of a longer footage file
(seconds of presentation time from its first frame); ``source`` is relative to ``split.json``'s ``footage_root``
when the dataset has one, else to the dataset root. A row with ``file_name`` too reads that file whole (its
source/start/end are provenance only).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from workbench.common import UserError, first_line


class ManifestError(UserError, ValueError):
    """A dataset folder whose manifest cannot be read."""


class UnusablePath(ManifestError):
    """A manifest entry whose path cannot name a file (a NUL byte, a symlink loop, a name too long).
    ``reason`` is the message without the entry's name and line."""

    def __init__(self, entry: Entry, reason: str):
        super().__init__(f"{entry.key} ({entry.where}): {reason}")
        self.reason = reason


class PathOutsideRoot(UnusablePath):
    """A manifest entry whose file is not inside the dataset folder (``..``, an absolute path, a symlink out)."""


@dataclass(frozen=True)
class Entry:
    """One manifest row. ``where`` names the manifest line, for error messages."""

    file_name: str  # the file read; a range row's ``source``
    caption: str | None
    where: str
    image: str | None = None  # image-to-video: the conditioning image (default: the clip's first frame)
    start: float | None = None  # a range row: the span read, seconds from the source's first frame
    end: float | None = None
    base: str | None = None  # the folder file_name is relative to when not the dataset root (footage_root)
    provenance: tuple | None = None  # a clip row's (source, start, end) as written; never read from

    @property
    def key(self) -> str:
        """The sample's identity (dataset ids, duplicates, the cache, reports, I2V noise seeds): two ranges of
        one source are two samples."""
        if self.start is None:
            return self.file_name
        return f"{self.file_name}@{self.start:.3f}-{self.end:.3f}"

    @property
    def range(self) -> tuple[float, float] | None:
        """(start, end) of a range row, None for a file read whole."""
        return None if self.start is None else (self.start, self.end)

    def path(self, root: str | Path) -> Path:
        """The entry's file under ``root`` (under the footage root for a range row of a dataset with split.json).
        That folder is a boundary: an absolute path, a path that leaves it with ``..`` or a symlink that resolves
        outside it raises PathOutsideRoot naming the line."""
        if self.base is not None:
            return self._inside(Path(root) / self.base, self.file_name, "footage root")
        return self._inside(root, self.file_name)

    def image_path(self, root: str | Path) -> Path | None:
        """The entry's conditioning image under ``root`` (the same boundary as ``path``), or None."""
        return None if self.image is None else self._inside(root, self.image)

    def _inside(self, root: str | Path, name: str, what: str = "dataset root") -> Path:
        root = Path(root)
        real_root = root.resolve()
        fix = ("list the footage relative to it" if what == "footage root"
               else "copy the file into the dataset folder and list it relative to it")
        if name != self.file_name:  # the entry's image: say so
            fix = f"{fix} (image {name})"
        if Path(name).is_absolute() or Path(name).drive:
            raise PathOutsideRoot(self, f"absolute path; manifest paths must be relative to the {what} ({root}): "
                                        f"{fix}")
        if not Path(os.path.normpath(real_root / name)).is_relative_to(real_root):
            raise PathOutsideRoot(self, f"path leaves the {what} ({root}): {fix}")
        try:
            resolved = (real_root / name).resolve()
        except (ValueError, RuntimeError, OSError) as e:  # a NUL byte, a symlink loop, a name too long
            why = "has a NUL byte" if "\x00" in name else f"cannot be resolved ({first_line(e)})"
            what = f"image {name!r}" if name != self.file_name else "path"
            raise UnusablePath(self, f"the {what} {why}: fix the manifest row") from None
        if not resolved.is_relative_to(real_root):
            raise PathOutsideRoot(self, f"is a symlink to {resolved}, outside the {what} ({root}): {fix} (the "
                                        f"{'footage' if what == 'footage root' else 'dataset'} must be self-contained)")
        return root / name


MANIFEST_NAMES = ("metadata.jsonl", "metadata.csv", "prompts.txt + videos.txt")


def find_manifest(root: Path) -> str:
    """The layout name found in ``root``, or a ManifestError saying which files are expected."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: dataset folder not found")
    for name in ("metadata.jsonl", "metadata.csv"):
        if (root / name).is_file():
            return name
    if (root / "prompts.txt").is_file() and (root / "videos.txt").is_file():
        return "prompts.txt + videos.txt"
    raise ManifestError(
        f"{root}: no manifest found; expected one of {', '.join(MANIFEST_NAMES)} (see datasets/README.md)"
    )


def _lines(text: str) -> list[str]:
    """``text``'s lines, split at line ends only (``\\n``, ``\\r\\n``, ``\\r``): str.splitlines also splits at
    form feeds, U+0085, U+2028 and the like, which JSON strings and captions may hold, so a line would
    break in two and every prompt after it would pair with the wrong video."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def read_lines(path: Path) -> list[str]:
    """The lines of a manifest text file (UTF-8, a byte-order mark dropped), split as the reader splits them."""
    return _lines(_read_text(path))


def _read_text(path: Path) -> str:
    """The file's text; a UTF-8 byte-order mark (Excel's "CSV UTF-8") is dropped."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text ({e}); re-save it as UTF-8") from e


def read_manifest(root: str | Path) -> list[Entry]:
    """All entries of the dataset at ``root``, in manifest order (nothing filtered here)."""
    root = Path(root)
    layout = find_manifest(root)
    entries: list[Entry] = []
    footage = _Footage(root)
    if layout == "metadata.jsonl":
        path = root / layout
        for n, line in enumerate(read_lines(path), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{n}: invalid JSON ({e.msg})") from e
            except RecursionError:
                raise ManifestError(f"{path}:{n}: invalid JSON (nested too deeply); each line is one JSON object "
                                    "such as {\"file_name\": \"videos/a.mp4\", \"caption\": \"...\"}") from None
            if not isinstance(row, dict) or ("file_name" not in row and "source" not in row):
                raise ManifestError(f"{path}:{n}: each line needs a 'file_name' (and 'caption') field, or a clip "
                                    "range: 'source', 'start', 'end' (see datasets/README.md, Clip ranges)")
            entries.append(_entry(row, f"{layout}:{n}", f"{path}:{n}", footage))
    elif layout == "metadata.csv":
        path = root / layout
        # The csv module reads quoted fields across lines (a caption with a line break) and counts lines
        # itself, so each entry names the line it starts on; newline="" keeps CRLF (Excel) out of fields.
        reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
        try:
            fields = [f.strip() for f in reader.fieldnames or []]
        except csv.Error as e:
            raise ManifestError(f"{path}:1: unreadable CSV header ({first_line(e)}); the first line names the "
                                "columns: file_name,caption") from None
        if "file_name" not in fields and "source" not in fields:
            raise ManifestError(f"{path}: header must have 'file_name' and 'caption' columns (found "
                                f"{', '.join(repr(f) for f in fields) or 'none'})")
        reader.fieldnames = fields
        start = reader.line_num + 1
        try:
            for row in reader:
                # an empty cell is an absent value; no file_name but a source: a range row
                cells = {k: v for k, v in row.items() if k is not None and isinstance(v, str) and v.strip()}
                name = (row.get("file_name") or "").strip()
                if name or not cells.get("source"):
                    cells["file_name"] = name
                entries.append(_entry(cells, f"{layout}:{start}", f"{path}:{start}", footage))
                start = reader.line_num + 1
        except csv.Error as e:  # a field past the csv module's limit: mostly a quote that is never closed
            raise ManifestError(f"{path}:{start}: unreadable CSV row ({first_line(e)}); look for a '\"' that is "
                                "not closed (quote a caption with commas or line breaks whole: \"a, b\")") from None
    else:
        prompts = read_lines(root / "prompts.txt")
        videos = read_lines(root / "videos.txt")
        while videos and not videos[-1].strip():
            videos.pop()
        if len(prompts) < len(videos):
            prompts += [""] * (len(videos) - len(prompts))
        images = read_lines(root / "images.txt") if (root / "images.txt").is_file() else []
        if images and len(images) < len(videos):
            raise ManifestError(f"{root / 'images.txt'}: {len(images)} lines for {len(videos)} videos; give every "
                                "video its image (line N of images.txt belongs to line N of videos.txt)")
        images += [""] * (len(videos) - len(images))
        for n, (video, prompt, image) in enumerate(zip(videos, prompts, images), start=1):
            entries.append(Entry(video.strip(), _caption(prompt), f"videos.txt:{n}", _image(image)))
    if not entries:
        raise ManifestError(f"{root / layout.split(' ')[0]}: the manifest lists no videos")
    return entries


class _Footage:
    """The folder range rows' ``source`` is relative to: split.json's ``footage_root`` (read once, when the first
    range row needs it), else the dataset root (None)."""

    def __init__(self, root: Path):
        self.root, self.read, self.base = root, False, None

    def __call__(self) -> str | None:
        if not self.read:
            self.read, self.base = True, footage_root(self.root)
        return self.base


def footage_root(root: str | Path) -> str | None:
    """``footage_root`` of ``root/split.json`` as written (absolute, or relative to ``root``), None without
    split.json; a ManifestError naming split.json for one that is not JSON, lacks it or names no folder."""
    path = Path(root) / "split.json"
    if not path.is_file():
        return None
    fix = ('split.json must be a JSON object with "footage_root": the folder holding the footage (absolute, or '
           'relative to the dataset folder)')
    try:
        spec = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ManifestError(f"{path}: not JSON ({first_line(e)}); {fix}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("footage_root"), str) or not spec["footage_root"].strip():
        raise ManifestError(f"{path}: no \"footage_root\" string; {fix}")
    base = spec["footage_root"].strip()
    try:
        found = (Path(root) / base).is_dir()
    except (OSError, ValueError):  # a NUL byte, a name too long
        found = False
    if not found:
        raise ManifestError(f"{path}: footage_root {base!r} is not a folder ({Path(root) / base} not found); fix it to "
                            "name the folder holding the footage (absolute, or relative to the dataset folder)")
    return base


def _seconds(row: dict, name: str, at: str) -> float | None:
    value = row.get(name)
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        seconds = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        seconds = math.nan
    if not math.isfinite(seconds):
        raise ManifestError(f"{at}: {name}={value!r} is not a number of seconds; write {name} as seconds from the "
                            "footage's first frame (e.g. 12.5)")
    return seconds


def _entry(row: dict, where: str, at: str, footage: _Footage) -> Entry:
    """One jsonl/csv row (``at``: the manifest line, for errors): a clip file, or a range of a footage file."""
    start, end = _seconds(row, "start", at), _seconds(row, "end", at)
    if (start is None) != (end is None):
        given, missing = ("start", "end") if end is None else ("end", "start")
        raise ManifestError(f"{at}: {given} without {missing}; a clip range needs both (seconds), or neither")
    if start is not None and not 0 <= start < end:
        raise ManifestError(f"{at}: range start={start:g} end={end:g} is empty or negative; it needs "
                            "0 <= start < end (seconds from the footage's first frame)")
    source = row.get("source")
    source = None if source is None else str(source).strip()
    if start is not None and not source:
        raise ManifestError(f"{at}: start/end without 'source'; a range row names its footage file in 'source' (and "
                            "has no 'file_name'): add it, or drop start/end to read file_name whole")
    caption, image = _caption(row.get("caption")), _image(row.get("image"))
    if "file_name" in row:  # a clip file read whole; source/start/end only say where it was cut from
        provenance = None if source is None else (source, start, end)
        return Entry(str(row["file_name"]), caption, where, image, provenance=provenance)
    return Entry(source, caption, where, image, start=start, end=end, base=footage())


def _caption(value) -> str | None:
    if value is None:
        return None
    text = str(value).replace("\r\n", "\n").strip()
    return text or None


def _image(value) -> str | None:
    if value is None or (isinstance(value, float) and value != value):  # an empty csv cell
        return None
    text = str(value).strip()
    return text or None


def paths_outside_root(entries: list[Entry], root: str | Path) -> list[str]:
    """The messages of every entry whose file (or image) leaves ``root`` (see ``Entry.path``), or whose path
    cannot name a file at all (UnusablePath); empty when none does."""
    problems = []
    for entry in entries:
        try:
            entry.path(root)
            entry.image_path(root)
        except UnusablePath as e:
            problems.append(str(e))
    return problems


def refuse_paths_outside_root(entries: list[Entry], root: str | Path, what: str) -> None:
    """Raise a ManifestError listing every entry of ``root`` whose file leaves it (``what`` names the reader)."""
    problems = paths_outside_root(entries, root)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ManifestError(f"{what}: {len(problems)} manifest entries of {root} point outside it or cannot name a "
                            f"file: {shown}")
