"""What a file is, from its first bytes: a video container, or what else (an image, a web page, a Git LFS
pointer), and whether an mp4 was cut short before its index."""

from __future__ import annotations

from pathlib import Path


_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")


def container_kind(head: bytes) -> str | None:
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


def not_video_reason(head: bytes) -> str | None:
    """What a file that is no video container looks like, or None if it may be a video."""
    if container_kind(head) is not None:
        return None
    if head.startswith(b"version https://git-lfs"):
        return "is a Git LFS pointer, not the video: run `git lfs pull` in the dataset repository"
    images = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"BM": "a BMP image"}
    for magic, what in images.items():
        if head.startswith(magic):
            return f"is {what}, not a video"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":  # PyAV's FFmpeg reads no animated WebP either
        return ("is a WebP image, not a video (an animated WebP must be converted first, e.g. "
                "ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4)")
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


def mp4_without_moov(path: Path) -> bool:
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
