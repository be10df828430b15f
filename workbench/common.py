"""The few helpers every layer of the workbench needs, each written once.

Nothing here imports torch or another workbench module at import time, so the CLI starts fast and
any layer may use it (docs/architecture.md, the layer rule).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

# Names a recipe or flag uses for a dtype, and the torch attribute each stands for.
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class UserError(Exception):
    """A mistake the user can fix (a path, a recipe value, a manifest entry).

    The CLI prints its message on one line, ``error: ...``, and exits with status 2, without a
    traceback (``WORKBENCH_DEBUG=1`` shows it). The message names the file and the fix.
    """


def torch_dtype(name: str):
    """``fp32`` / ``bf16`` / ``fp16`` -> the torch dtype."""
    import torch

    if name not in DTYPE_NAMES:
        raise UserError(f"dtype {name!r}: choose one of {', '.join(DTYPE_NAMES)}")
    return getattr(torch, DTYPE_NAMES[name])


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hub_id(ref: str) -> bool:
    """True when ``ref`` can only mean a Hugging Face Hub repo id (``owner/name``).

    A path that exists locally, or one written as a path (``./x``, ``../x``, ``/x``, ``~/x``, more than
    one ``/``, a weights file name), is never a hub id.
    """
    ref = str(ref)
    if ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists():
        return False
    if ref.endswith((".ckpt", ".safetensors", ".pt", ".yaml")):
        return False
    return _HUB_ID.fullmatch(ref) is not None


def first_line(error: BaseException | str, limit: int = 300) -> str:
    """The first line of an exception's message, at most ``limit`` characters (its type name when empty)."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0][:limit]
    return type(error).__name__ if isinstance(error, BaseException) else ""


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path`` and rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 1) -> None:
    """``atomic_write_text`` of ``obj`` as JSON."""
    atomic_write_text(path, json.dumps(obj, indent=indent))


def yaml_error_place(path: str | os.PathLike, error: Exception) -> str:
    """``path:line:column`` of a PyYAML error (``path`` alone when the error has no position): where the
    construct that broke starts (its context) when PyYAML knows it, else where it noticed the problem, which
    for an unclosed construct is often the end of the file."""
    mark = getattr(error, "context_mark", None) or getattr(error, "problem_mark", None)
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)


class ImageUnreadable(ValueError):
    """An image file that PIL cannot decode; the message says why."""


def open_rgb_image(path: str | os.PathLike):
    """The image at ``path`` decoded as a PIL RGB image (the conditioning images of image-to-video models: data,
    ``data check``, validation videos, ``generate --image``). FileNotFoundError when it is missing,
    ImageUnreadable (its first line of PIL's reason) when it does not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageUnreadable(first_line(e)) from None
