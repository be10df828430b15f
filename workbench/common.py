"""The few helpers every layer of the workbench needs, each written once.

Nothing here imports torch or another workbench module at import time, so the CLI starts fast and
any layer may use it (docs/architecture.md, the layer rule).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import threading
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


class FolderBusy(UserError):
    """Another process holds a folder's ``folder_lock``."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, busy: str):
    """An exclusive lock on ``folder`` while the block runs (``flock`` on the folder: released when the block ends
    or the process dies, SIGKILL included); ``FolderBusy(busy)`` at once when another process holds it. No lock
    where the platform has no ``flock``. The one lock of the commands that write into a folder (``eval --out``,
    ``data caption``'s dataset)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(busy) from None
        yield
    finally:
        os.close(fd)


class DiskFull(UserError):
    """A write that ran out of space (ENOSPC, or EDQUOT: a quota). The message names the path, the space the
    write needed (when known) and what is free there; whatever was under that path before is left intact."""


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free to this user on the filesystem holding ``path`` (its nearest existing parent); None if unknown."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def is_disk_full(error: BaseException) -> bool:
    """True for an OSError (or one it was raised from) that means the disk or quota is full."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _NO_SPACE:
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(path: str | os.PathLike, needed: int | None = None, what: str = "") -> DiskFull:
    """The one-line DiskFull for a write of ``needed`` bytes (None: unknown) to ``path``."""
    free = free_bytes(path)
    need = f"needed {_human(needed)}" if needed else "needed more space"
    have = f", {_human(free)} free" if free is not None else ""
    thing = f"{what} " if what else ""
    return DiskFull(f"{path}: disk full writing {thing}({need}{have}); the previous file there is intact. "
                    "Free space on that disk or point the output elsewhere, then run the same command again")


class writing:
    """``with writing(path, needed, what):`` turns a disk-full OSError raised inside into ``disk_full_error``
    (a UserError: one line, exit 2); every other error passes through unchanged."""

    def __init__(self, path: str | os.PathLike, needed: int | None = None, what: str = ""):
        self.path, self.needed, self.what = path, needed, what

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is not None and not isinstance(error, DiskFull) and is_disk_full(error):
            raise disk_full_error(self.path, self.needed, self.what) from error
        return False


def atomic_write_bytes(path: str | os.PathLike, data: bytes, what: str = "") -> None:
    """Write ``data`` to a temporary file next to ``path``, fsync it and rename it over ``path``: ``path`` is
    the old complete file or the new one, never a partial file. A full disk raises DiskFull (the old file stays)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # per process and thread
    try:
        with writing(path, len(data), what):
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str, what: str = "") -> None:
    """``atomic_write_bytes`` of ``text`` as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"), what)


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 1, what: str = "") -> None:
    """``atomic_write_text`` of ``obj`` as JSON."""
    atomic_write_text(path, json.dumps(obj, indent=indent), what)


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


# ---------------------------------------------------------------------------------------------------
# The one video writer: every mp4 the package writes goes through ``write_video``.
#
# In-process (PyAV's libx264), never an ffmpeg subprocess: imageio-ffmpeg starts ffmpeg with
# ``preexec_fn=os.setpgrp``, which Python documents as unsafe with threads, and clips written from a thread
# pool that way hung forever in the forked child before ``exec`` (the sample-data writer stalled a test run).

DEFAULT_CRF = 18  # x264's "visually lossless" end; the sample data uses 10 (imageio's quality=8, as before)


def video_frames_uint8(frames):
    """Frames as a C-contiguous (F, H, W, 3) uint8 numpy array. Takes (F, H, W, 3) uint8 or float in [0, 1]
    (diffusers' ``output_type="np"``, a list of such frames or of PIL images) or a torch tensor (F, C, H, W)
    float in [0, 1] (rounded, not truncated); an alpha channel is dropped."""
    import numpy as np

    if hasattr(frames, "permute"):  # torch (F, C, H, W)
        import torch

        frames = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    elif isinstance(frames, (list, tuple)):
        frames = np.stack([np.asarray(f) for f in frames]) if len(frames) else np.zeros((0, 0, 0, 3), np.uint8)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"a video is (frames, height, width, 3); got shape {frames.shape}")
    frames = frames[..., :3]
    if frames.dtype != np.uint8:
        frames = (np.clip(frames.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return np.ascontiguousarray(frames)


def encode_mp4(frames, fps: float, crf: int = DEFAULT_CRF, times=None, preset: str | None = None) -> bytes:
    """A video (see ``video_frames_uint8``) as H.264 yuv420p mp4 bytes, encoded in memory with PyAV.

    ``times``: each frame's presentation time in seconds (a variable-frame-rate clip keeps its timing; default:
    ``k / fps``). ``preset``: x264's (default: x264's own). Colours are converted with a scaler of this call's own,
    single-threaded: PyAV's shared per-thread scaler keeps swscale threads alive after the call."""
    import io
    from fractions import Fraction

    import av
    from av.video.reformatter import VideoReformatter

    video = video_frames_uint8(frames)
    if not len(video):
        raise ValueError("a video needs at least one frame")
    height, width = video.shape[1:3]
    if height % 2 or width % 2:  # yuv420p halves both; x264 refuses odd sizes
        raise ValueError(f"H.264 yuv420p needs an even width and height; got {width}x{height}")
    if times is not None and len(times) != len(video):
        raise ValueError(f"{len(times)} frame times for {len(video)} frames")
    scaler = VideoReformatter()
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = height, width
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(int(crf)), **({"preset": preset} if preset else {})}
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for k, picture in enumerate(video):
            frame = scaler.reformat(av.VideoFrame.from_ndarray(picture, format="rgb24"), format="yuv420p", threads=1)
            if times is not None:
                frame.pts = int(round((float(times[k]) - float(times[0])) * 1000))
                frame.time_base = Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush
    return buffer.getvalue()


def write_video(path: str | os.PathLike, frames, fps: float, crf: int = DEFAULT_CRF, times=None,
                preset: str | None = None) -> Path:
    """``encode_mp4`` written atomically to ``path`` (a temporary file beside it, fsync, rename): ``path`` is a
    complete video or absent, never a partial file. A full disk raises DiskFull naming ``path``. Safe from any
    thread (no subprocess)."""
    path = Path(path)
    atomic_write_bytes(path, encode_mp4(frames, fps, crf, times, preset), what="a video")
    return path


def read_video(path: str | os.PathLike):
    """Every frame of a video file in decode order as (F, H, W, 3) uint8, in-process (PyAV): for reading back
    what ``write_video`` wrote (showcase, round trips). Training data goes through workbench.data.decoding."""
    import av
    import numpy as np

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return np.stack(frames)
