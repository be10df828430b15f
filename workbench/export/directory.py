"""An export directory that appears only when complete: written aside, marked last, renamed into place.

``export.json`` (the marker) lists every file with its sha256 and is written last; an export directory
without it is incomplete. ``prepare_target`` refuses to clobber a finished export and removes leftovers
of a killed one; ``install`` renames the finished directory into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from workbench.common import UserError, file_sha256, is_disk_full

MARKER = "export.json"  # written last: an export directory without it is incomplete
EXPORT_FORMAT = "workbench-export/1"


class ExportError(UserError):
    """A problem the user can fix (bad path, missing run, existing export); printed without a traceback."""


# How a full disk (ENOSPC 28, EDQUOT 122) reads when a library reports it as its own error without the OSError:
# safetensors' writer ("I/O error: No space left on device (os error 28)"), torch's.
_NO_SPACE_TEXT = re.compile(r"No space left on device|Disk quota exceeded|os error (28|122)\b")


def no_space(error: BaseException) -> bool:
    """True when ``error`` (or one it was raised from) means the disk or quota is full, as an OSError's errno
    (workbench.common.is_disk_full) or in the words of a library that drops the errno (safetensors' writer)."""
    if is_disk_full(error):
        return True
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if _NO_SPACE_TEXT.search(str(error)):
            return True
        error = error.__cause__ or error.__context__
    return False


def write_marker(directory: Path, info: dict) -> None:
    """The completion marker: every file with its sha256, plus ``info``. Written last."""
    files = {p.relative_to(directory).as_posix(): {"sha256": file_sha256(p), "bytes": p.stat().st_size}
             for p in sorted(directory.rglob("*")) if p.is_file()}
    tmp = directory / f".{MARKER}.tmp"
    tmp.write_text(json.dumps({**info, "files": files}, indent=2))
    os.replace(tmp, directory / MARKER)


def is_complete_export(directory: str | os.PathLike) -> bool:
    """True when ``directory`` has a readable marker and every file it lists (sizes checked, not hashes)."""
    directory = Path(directory)
    try:
        marker = json.loads((directory / MARKER).read_text())
        return marker.get("format") == EXPORT_FORMAT and all(
            (directory / name).is_file() and (directory / name).stat().st_size == entry["bytes"]
            for name, entry in marker["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def verify_export(directory: str | os.PathLike) -> list[str]:
    """Problems with an export directory (missing marker, missing or altered files); empty when intact."""
    directory = Path(directory)
    if not is_complete_export(directory):
        return [f"{directory}: no valid {MARKER} (incomplete export)"]
    marker = json.loads((directory / MARKER).read_text())
    return [f"{directory / name}: sha256 mismatch" for name, entry in marker["files"].items()
            if file_sha256(directory / name) != entry["sha256"]]


def _siblings(out: Path, kind: str) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.{kind}-*"))


def prepare_target(out: Path, overwrite: bool) -> None:
    """Refuse to clobber a finished export (unless ``overwrite``); remove stale partial dirs of ``out``."""
    if out.is_file():
        raise ExportError(f"{out}: is a file; --out must be a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        if is_complete_export(out):
            raise ExportError(f"{out}: already holds a complete export; pass --overwrite to replace it")
        raise ExportError(f"{out}: exists and is not a workbench export; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in _siblings(out, "partial") + _siblings(out, "old"):
        shutil.rmtree(stale, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def install(partial: Path, out: Path) -> None:
    """Move a finished ``partial`` directory to ``out`` (renames only; never a half-written ``out``). A previous
    export at ``out`` is moved aside only for the rename, and back if the rename fails."""
    mask = _umask()  # mkdtemp and safetensors create private (0700/0600) entries; give the usual modes
    for p in [partial, *partial.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)
    aside = None
    if out.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, aside)
    try:
        os.replace(partial, out)
    except BaseException:
        if aside is not None:
            os.replace(aside, out)  # the previous export back under its name
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
