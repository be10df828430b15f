"""Dataset manifests: which video goes with which caption.

Two layouts are read (documented in datasets/README.md):

* ``metadata.jsonl`` or ``metadata.csv`` with ``file_name`` and ``caption`` columns
  (the Hugging Face videofolder layout);
* ``prompts.txt`` + ``videos.txt``, one entry a line, line N of each belonging together
  (the CogVideo repo's finetune layout).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from workbench.common import UserError


class ManifestError(UserError, ValueError):
    """A dataset folder whose manifest cannot be read."""


@dataclass(frozen=True)
class Entry:
    """One manifest row. ``where`` names the manifest line, for error messages."""

    file_name: str
    caption: str | None
    where: str

    def path(self, root: Path) -> Path:
        return root / self.file_name


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


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text ({e}); re-save it as UTF-8") from e


def read_manifest(root: str | Path) -> list[Entry]:
    """All entries of the dataset at ``root``, in manifest order (nothing filtered here)."""
    root = Path(root)
    layout = find_manifest(root)
    entries: list[Entry] = []
    if layout == "metadata.jsonl":
        path = root / layout
        for n, line in enumerate(_read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{n}: invalid JSON ({e.msg})") from e
            if not isinstance(row, dict) or "file_name" not in row:
                raise ManifestError(f"{path}:{n}: each line needs a 'file_name' (and 'caption') field")
            entries.append(Entry(str(row["file_name"]), _caption(row.get("caption")), f"{layout}:{n}"))
    elif layout == "metadata.csv":
        path = root / layout
        reader = csv.DictReader(_read_text(path).splitlines())
        if not reader.fieldnames or "file_name" not in reader.fieldnames:
            raise ManifestError(f"{path}: header must have 'file_name' and 'caption' columns")
        for n, row in enumerate(reader, start=2):
            entries.append(Entry(row["file_name"], _caption(row.get("caption")), f"{layout}:{n}"))
    else:
        prompts = _read_text(root / "prompts.txt").splitlines()
        videos = _read_text(root / "videos.txt").splitlines()
        while videos and not videos[-1].strip():
            videos.pop()
        if len(prompts) < len(videos):
            prompts += [""] * (len(videos) - len(prompts))
        for n, (video, prompt) in enumerate(zip(videos, prompts), start=1):
            entries.append(Entry(video.strip(), _caption(prompt), f"videos.txt:{n}"))
    if not entries:
        raise ManifestError(f"{root / layout.split(' ')[0]}: the manifest lists no videos")
    return entries


def _caption(value) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
