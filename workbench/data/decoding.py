"""Reading video files: decord where it reads a clip correctly, PyAV where it does not.

Two calls, used by training, ``prepare`` and ``data check`` alike:

``probe(path) -> VideoInfo``
    Frame count, frame rate, displayed size, duration, whether the frame rate is variable, every frame's
    presentation time, and the backend :func:`read_frames` will use. One PyAV pass *demuxes* the video
    packets (no decoding) for their timestamps, and decodes only until the first frame comes out, which
    proves a decoder exists and gives the rotation and the coded size. It costs about what opening the file
    with decord does (decord also indexes every packet), and it is cached per file (path, size, mtime).
``read_frames(path, times_s) -> np.ndarray (F, H, W, 3) uint8``
    For each time (seconds from the first frame's presentation time) the frame shown at that time: the
    last frame whose presentation time is <= t. Times map to frames through the real timestamps, never
    through an average frame rate, whichever backend decodes.

Which backend
-------------
decord 0.6 (what the project has always used, so ordinary clips give the very same pixels) unless it is
known to fail on the clip; then PyAV (``av`` >= 14, which bundles FFmpeg 8 with libdav1d):

* GIF: decord says "Failed to measure duration/frame-count due to broken metadata";
* a codec decord's FFmpeg 4.1 has no decoder for (AV1, VVC, ...): decord fails to open the file with
  "cannot find video stream with wanted index: -1" (FFmpeg's "decoder not found");
* a displayed width where decord returns 4-, 6-, 8- or 12-channel frames and then fails
  (:func:`decord_bad_width`: 8, 12, 16, 24, 48 and 72 px among even widths);
* rotation metadata outside mp4/mov (FFmpeg 4.1 turns only the mp4 display matrix into the "rotate" tag
  decord applies).

A decord read is checked (its frame count, and its own timestamps for the requested frames, against the
probe's; the shape of what it returns); on any disagreement or decord exception the clip is decoded with
PyAV instead, so a decord bug this list does not know costs speed, not correctness.

Variable frame rate
-------------------
A clip is VFR when its timestamps stray more than a quarter of a frame from the constant-rate grid (and
by more than the container clock's rounding): see :func:`_is_vfr`. VFR clips stay on decord. Its frame
table is in presentation order and carries each frame's real timestamp, so once a time is mapped to a
frame number through the real timestamps (as here) decord returns the right frame; what went wrong before
was only the arithmetic that turned times into frame numbers with decord's *average* fps. The check above
compares decord's timestamps with the probe's frame by frame, so a VFR clip decord indexes differently
still falls back to PyAV. Keeping one backend for ordinary and VFR H.264 keeps their pixels identical.

Rotation
--------
Frames come out as displayed. A display-matrix rotation of R degrees (counter-clockwise, as FFmpeg
reports it) is applied as ``np.rot90(frame, R // 90)``: bit-identical to what decord 0.6 does for mp4,
and what the ffmpeg CLI's autorotate shows. Flips and angles that are not multiples of 90 are ignored
(decord ignores them too).

Errors are :class:`VideoError` with the cause; a codec no decoder here reads is an
:class:`UnsupportedCodecError` naming the codec and the command that re-encodes the file.
"""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Decoder names (as PyAV's FFmpeg names them) that decord 0.6's FFmpeg 4.1 decodes correctly: h264, hevc,
# vp8, vp9, prores, mjpeg and mpeg4 were tested frame by frame; the MPEG-1/2 decoders have not changed
# in a decade. Anything else goes to PyAV without trying decord first.
DECORD_DECODERS = frozenset({"h264", "hevc", "vp8", "vp9", "prores", "mjpeg", "mpeg4", "mpeg1video", "mpeg2video"})
# Formats whose frames build on the previous one although only the first is flagged a keyframe: a seek
# would land on a partial picture, so these are always decoded from the start.
NO_SEEK_CODECS = frozenset({"gif", "apng", "webp"})
# PyAV's container.format.name for mp4/mov starts with this ("mov,mp4,m4a,3gp,3g2,mj2").
MP4_FORMAT_PREFIX = "mov"

# The VFR test: timestamps more than this many frame intervals off the constant-rate grid, and more than
# this many ticks of the container's clock (which rounding alone can cause).
VFR_GRID_TOL_FRAMES = 0.25
VFR_GRID_TOL_TICKS = 1.0
# Decode errors tolerated while looking for the first frame (open-GOP leading pictures fail to decode).
FIRST_FRAME_MAX_ERRORS = 32
# A seek costs about one GOP start: worth it only when it skips more frames than this.
MIN_FRAMES_SKIPPED_BY_SEEK = 4

# One decoding thread per reader, as decord is opened in this project: data loader workers and the
# `data check` worker processes provide the parallelism, and more threads per clip only oversubscribe.
DECORD_THREADS = 1
PYAV_THREADS = 1

REENCODE_COMMAND = "ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4"


class VideoError(ValueError):
    """A video that cannot be used, with the reason in the message."""


class UnsupportedCodecError(VideoError):
    """No decoder for the clip's video codec, neither in decord's FFmpeg nor in PyAV's."""

    def __init__(self, path: str | Path, codec: str, bundled_ffmpeg_decodes_it: str | None = None):
        self.codec = codec
        self.command = reencode_command(path)
        where = ("; the ffmpeg bundled with imageio-ffmpeg can decode it: " + shlex.quote(bundled_ffmpeg_decodes_it)
                 if bundled_ffmpeg_decodes_it else "")
        super().__init__(f"unsupported video codec '{codec}' (neither decord nor PyAV has a decoder for it): "
                         f"re-encode it, e.g. {self.command}{where}")


def reencode_command(path: str | Path) -> str:
    """The ffmpeg command that re-encodes ``path`` to H.264 next to it (``NAME_h264.mp4``)."""
    path = Path(path)
    out = path.with_name(path.stem + "_h264.mp4")
    return REENCODE_COMMAND.replace("IN", shlex.quote(str(path))).replace("OUT.mp4", shlex.quote(str(out)))


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` finds out about a video (sizes as displayed, i.e. after rotation).

    ``fps`` is the container's nominal rate when the real timestamps keep to its grid (the number decord's
    ``get_avg_fps`` gives, so frame sampling is unchanged for such clips), otherwise the mean rate
    ``(num_frames - 1) / frame_times[-1]``. ``frame_times`` are the presentation times in seconds from the
    first frame, in display order; ``duration`` runs to the end of the last frame.
    """

    num_frames: int
    fps: float
    height: int
    width: int
    duration: float
    vfr: bool
    frame_times: np.ndarray = field(repr=False, compare=False)
    backend: str = "decord"
    backend_reason: str = ""
    codec: str = ""
    rotation: int = 0

    @property
    def fps_range(self) -> tuple[float, float]:
        """(lowest, highest) frame rate between consecutive frames; (fps, fps) below three frames."""
        intervals = np.diff(self.frame_times)
        intervals = intervals[intervals > 0]
        if len(intervals) < 2:
            return self.fps, self.fps
        return float(1.0 / intervals.max()), float(1.0 / intervals.min())

    def display_midpoint(self, index: int) -> float:
        """The middle of the time frame ``index`` is shown: a time :func:`read_frames` maps to that frame
        whatever the rounding of the timestamps."""
        t = self.frame_times
        end = t[index + 1] if index + 1 < len(t) else self.duration
        return float(t[index] + end) / 2.0


def decord_bad_width(width: int, align: int = 32) -> bool:
    """True for frame widths at which decord 0.6 returns misshaped (4-, 6-, 8-, 12-channel) RGB frames.

    FFmpeg 4.1's ``av_frame_get_buffer`` pads an RGB24 row to ``3 * FFALIGN(width, 2**k)`` bytes for the
    smallest k that makes it a multiple of ``align`` (32 on x86 builds), and decord infers the channel
    count as ``linesize / width`` whenever that divides evenly. Checked against decord on every even width
    from 8 to 256 px: exactly 8, 12, 16, 24, 48 and 72 fail.
    """
    if width <= 0:
        return False
    block = 1
    while True:
        linesize = 3 * (-(-width // block) * block)
        if linesize % align == 0:
            break
        block *= 2
    return linesize % width == 0 and linesize // width != 3


# -- the probe ----------------------------------------------------------------------------------------------
@dataclass
class _Scan:
    """Everything one demux pass learns about a file; what :func:`read_frames` needs to decode it."""

    path: str
    codec: str  # canonical codec name, e.g. "av1"
    decoder: str  # PyAV's decoder for it, e.g. "libdav1d"
    container: str
    time_base: float
    pts_ticks: np.ndarray  # int64, in the stream's time base, display order
    frame_times: np.ndarray  # float64 seconds from the first frame, display order
    keyframe_ticks: np.ndarray  # sorted pts of the keyframe packets
    last_frame_duration: float
    coded_height: int
    coded_width: int
    rotation: int  # degrees counter-clockwise, a multiple of 90 in [0, 360)
    nominal_fps: float | None  # the container's average rate (what decord reports as its fps)
    vfr: bool

    @property
    def num_frames(self) -> int:
        return len(self.frame_times)

    @property
    def height(self) -> int:
        return self.coded_width if self.rotation in (90, 270) else self.coded_height

    @property
    def width(self) -> int:
        return self.coded_height if self.rotation in (90, 270) else self.coded_width

    @property
    def duration(self) -> float:
        return float(self.frame_times[-1]) + self.last_frame_duration

    @property
    def fps(self) -> float:
        n, last = self.num_frames, float(self.frame_times[-1])
        mean = (n - 1) / last if n > 1 and last > 0 else 0.0
        nominal = self.nominal_fps
        # the nominal rate when the real timestamps keep to its grid: decord reports it, and today's frame
        # sampling used it; a wrong nominal rate (a container's guess) would drift off the real times
        if nominal and not self.vfr and (not mean or not _off_grid(self.frame_times, 1.0 / nominal, self.time_base)):
            return nominal
        return mean or nominal or 0.0

    def backend(self) -> tuple[str, str]:
        """(backend, why) for this clip; see the module docstring."""
        if self.codec == "gif":
            return "pyav", "GIF: decord cannot read GIFs"
        if self.decoder not in DECORD_DECODERS:
            return "pyav", f"codec {self.codec}: decord's FFmpeg 4.1 has no decoder for it"
        if decord_bad_width(self.width):
            return "pyav", f"width {self.width} px: decord returns misshaped frames at this width"
        if self.rotation and not self.container.startswith(MP4_FORMAT_PREFIX):
            return "pyav", f"rotation in {self.container}: decord applies rotation only in mp4/mov"
        if _decord() is None:
            return "pyav", "decord is not installed"
        return "decord", "decord reads this clip"


def _off_grid(times: np.ndarray, interval: float, tick: float) -> bool:
    """True when ``times`` (s, from 0) stray from the grid ``k * interval`` by more than a quarter of an
    interval and more than one clock tick."""
    dev = float(np.max(np.abs(times - interval * np.arange(len(times)))))
    return bool(dev > VFR_GRID_TOL_FRAMES * interval and dev > VFR_GRID_TOL_TICKS * tick)


def _is_vfr(times: np.ndarray, tick: float) -> bool:
    """Whether presentation times (s, sorted, from 0) are a variable frame rate.

    Sampling at a constant rate takes frame i to be shown at ``i * D`` with ``D = t_last / (n - 1)``, so
    what matters is how far the real timestamps stray from that grid: VFR means more than a quarter of a
    frame (beyond that the error, added to the half-frame rounding of sampling, can pick a neighbour) and
    more than one tick of the container's clock (what rounding timestamps to the clock does by itself).
    Sorted timestamps hide B-frame reordering; clock rounding (29.97 fps in Matroska's 1 ms clock: 33/34 ms
    frames; 24 fps GIF in 1/100 s: 4/4/4/4/4/5 cs) stays under 0.15 frame, and capture jitter without
    drift (+-4 ms at 30 fps) under 0.25; a change of rate (30 -> 10 fps) or dropped frames move every later
    frame by whole intervals and are flagged. A spread of frame durations would flag harmless clock
    rounding (the 24 fps GIF has a 25 % spread).
    """
    n = len(times)
    if n < 3 or times[-1] <= 0:
        return False
    return _off_grid(times, float(times[-1]) / (n - 1), tick)


def _open_av(path: str):
    import av

    # PyAV < 19 decodes metadata strictly unless told to ignore errors; 19 dropped the argument (and ignores them)
    kwargs = {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}
    try:
        return av.open(path, **kwargs)
    except av.error.FFmpegError as e:
        raise VideoError(f"cannot decode: the file does not open as a video ({_ffmpeg_message(e)})") from e


def _ffmpeg_message(e: Exception) -> str:
    """FFmpeg's own words ("Invalid data found when processing input"), without PyAV's errno and path."""
    text = str(getattr(e, "strerror", None) or e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _video_stream(container):
    streams = [s for s in container.streams.video if not (s.disposition & s.disposition.attached_pic)]
    if not streams:
        raise VideoError("cannot decode: the file has no video stream (an audio file or an image?)")
    return streams[0]


@functools.lru_cache(maxsize=128)
def _scan_cached(path: str, size: int, mtime_ns: int) -> _Scan:
    return _scan(path)


def _get_scan(path: str | Path) -> _Scan:
    path = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoError("file not found") from None
    except OSError as e:
        raise VideoError(f"cannot be read ({e.strerror})") from e
    if st.st_size == 0:
        raise VideoError("zero-length file")
    return _scan_cached(path, st.st_size, st.st_mtime_ns)


def _scan(path: str) -> _Scan:
    import av

    with _open_av(path) as container:
        container_name = container.format.name
        if container_name == "image2" or container_name.endswith("_pipe"):  # png_pipe, jpeg_pipe, webp_pipe...
            # FFmpeg reads an image as a one-frame video (and decodes no animated WebP); decord refused images
            animated = (f"; an animated WebP must be converted first, e.g. {reencode_command(path)}"
                        if container_name == "webp_pipe" else "")
            raise VideoError(f"cannot decode: the file is an image ({container_name}), not a video{animated}")
        stream = _video_stream(container)
        for other in container.streams:
            if other.index != stream.index:
                other.discard = other.discard.all  # do not even parse audio or subtitle packets
        codec_context = stream.codec_context
        if codec_context is None:  # PyAV has no decoder for this codec (and then exposes no codec id)
            raise UnsupportedCodecError(path, *_codec_from_ffmpeg_cli(path))
        codec = getattr(codec_context.codec, "canonical_name", None) or codec_context.name
        pts, durations, keyframes, packets = [], [], [], 0
        first_frame, decode_error, decode_errors = None, None, 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0 and packet.pts is None:
                    continue  # the empty packet PyAV yields at the end of the file
                packets += 1
                if first_frame is None and decode_errors < FIRST_FRAME_MAX_ERRORS:
                    try:
                        frames = stream.decode(packet)
                        first_frame = frames[0] if frames else None
                    except av.error.FFmpegError as e:  # e.g. leading pictures of an open GOP: keep trying
                        decode_error, decode_errors = e, decode_errors + 1
                if packet.is_discard:
                    continue  # e.g. frames before an mp4 edit list's start: never displayed
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    continue
                pts.append(ts)
                durations.append(packet.duration or 0)
                if packet.is_keyframe:
                    keyframes.append(ts)
        except av.error.FFmpegError as e:  # cut short or damaged past its header: unusable, as for decord
            raise VideoError(f"cannot decode: its packets cannot be read ({_ffmpeg_message(e)}; cut short?)") from e
        if first_frame is None and decode_errors < FIRST_FRAME_MAX_ERRORS:
            try:
                frames = stream.decode(None)  # flush: a short clip whose decoder holds frames back
                first_frame = frames[0] if frames else None
            except av.error.FFmpegError as e:
                decode_error = e
        # Copy what is needed now: PyAV streams, codec contexts and frames must not be touched after the
        # container is closed (that segfaults).
        decoder, time_base, indexed = codec_context.name, float(stream.time_base), stream.frames
        nominal_fps = float(stream.average_rate) if stream.average_rate else None
        if first_frame is not None:
            rotation, coded_h, coded_w = first_frame.rotation, first_frame.height, first_frame.width

    if not pts:
        raise VideoError("cannot decode: the video stream has no frames (no packet has a timestamp)")
    if indexed and packets < indexed:  # an mp4 whose index (at the front) lists frames the file lacks
        raise VideoError(f"cannot decode: the file is cut short: its index lists {indexed} frames but only "
                         f"{packets} are in it (an incomplete download or copy?): copy it again")
    if first_frame is None:
        detail = _ffmpeg_message(decode_error) if decode_error else "the decoder returned no frame"
        raise VideoError(f"cannot decode its {codec} video ({decoder} decoder: {detail}); if the file plays, "
                         f"re-encode it, e.g. {reencode_command(path)}")
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")  # decode order -> display order
    pts_ticks = np.asarray(pts, dtype=np.int64)[order]
    frame_times = (pts_ticks - pts_ticks[0]) * time_base
    frame_times.setflags(write=False)  # shared by every VideoInfo of this (cached) scan
    last_frame_duration = float(np.asarray(durations, dtype=np.int64)[order][-1]) * time_base
    if last_frame_duration <= 0:  # no packet duration: assume the typical frame interval
        last_frame_duration = (float(np.median(np.diff(frame_times))) if len(frame_times) > 1
                               else 1.0 / nominal_fps if nominal_fps else 0.0)
    rotation = int(round(rotation)) % 360 if rotation else 0
    if rotation % 90:
        rotation = 0  # decord ignores such angles too
    return _Scan(
        path=path, codec=codec, decoder=decoder, container=container_name, time_base=time_base,
        pts_ticks=pts_ticks, frame_times=frame_times, keyframe_ticks=np.unique(np.asarray(keyframes, dtype=np.int64)),
        last_frame_duration=last_frame_duration, coded_height=coded_h, coded_width=coded_w, rotation=rotation,
        nominal_fps=nominal_fps, vfr=_is_vfr(frame_times, time_base),
    )


def _codec_from_ffmpeg_cli(path: str) -> tuple[str, str | None]:
    """(codec name, path of an ffmpeg that decodes it or None) for a stream PyAV has no decoder for.

    PyAV exposes no codec id then, so the ffmpeg binary bundled with imageio-ffmpeg names it (its build has
    more decoders, e.g. AVS2, so it may also be the tool that can re-encode the file). Error path only.
    """
    codec, exe = "unknown", None
    try:
        import imageio_ffmpeg

        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        info = subprocess.run([ffmpeg, "-hide_banner", "-i", path], capture_output=True, text=True, timeout=30)
        for line in info.stderr.splitlines():
            if "Video:" in line:
                codec = line.split("Video:", 1)[1].strip().split()[0].strip(",")
                break
        trial = subprocess.run([ffmpeg, "-v", "error", "-i", path, "-map", "0:v:0", "-frames:v", "1", "-f", "null",
                                "-"], capture_output=True, text=True, timeout=60)
        if trial.returncode == 0 and "decoder" not in trial.stderr.lower():
            exe = ffmpeg
    except Exception:  # noqa: BLE001 - best effort: only the message depends on it
        pass
    return codec, exe


def probe(path: str | Path) -> VideoInfo:
    """Frame count, fps, displayed size, duration, VFR flag, frame times and backend of a video.

    Raises VideoError (UnsupportedCodecError for a codec no decoder here reads) with the cause.
    """
    scan = _get_scan(path)
    backend, reason = scan.backend()
    return VideoInfo(
        num_frames=scan.num_frames, fps=scan.fps, height=scan.height, width=scan.width, duration=scan.duration,
        vfr=scan.vfr, frame_times=scan.frame_times, backend=backend, backend_reason=reason, codec=scan.codec,
        rotation=scan.rotation,
    )


# -- reading frames -----------------------------------------------------------------------------------------
def frame_numbers_at_times(info: VideoInfo | _Scan, times_s) -> np.ndarray:
    """The number of the frame shown at each time: the last frame whose presentation time is <= t."""
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    if t.size == 0:
        return np.zeros(0, dtype=np.int64)
    slack = 1e-6  # a time computed as k / fps in floating point must still select the frame starting at k / fps
    if not np.all(np.isfinite(t)) or t.min() < -slack or t.max() > info.duration + slack:
        raise ValueError(f"times must lie within the clip, [0, {info.duration:.4f}] s; got "
                         f"[{t.min():.4f}, {t.max():.4f}]")
    numbers = np.searchsorted(info.frame_times, t + slack, side="right") - 1
    return np.clip(numbers, 0, len(info.frame_times) - 1)


def read_frames(path: str | Path, times_s, backend: str | None = None) -> np.ndarray:
    """(F, H, W, 3) uint8: for each time (s from the first frame) the frame shown then, as displayed.

    ``backend`` forces "decord" or "pyav" (for tests); by default the one :func:`probe` reports, with PyAV
    taking over when decord fails or disagrees with the probe. Raises VideoError.
    """
    scan = _get_scan(path)
    numbers = frame_numbers_at_times(scan, times_s)
    if numbers.size == 0:
        return np.zeros((0, scan.height, scan.width, 3), np.uint8)
    wanted, where = np.unique(numbers, return_inverse=True)
    chosen = backend or scan.backend()[0]
    frames = _read_decord(scan, wanted) if chosen == "decord" else None
    if frames is None:
        if backend == "decord":
            raise VideoError("cannot decode: decord could not decode it correctly")
        frames = _read_pyav(scan, wanted)
    return frames[where]


_decord_module = False  # not imported yet


def _decord():
    """decord, imported on first use, or None when it is not installed (PyAV reads everything then)."""
    global _decord_module
    if _decord_module is False:
        try:
            import decord

            _decord_module = decord
        except ImportError:
            _decord_module = None
    return _decord_module


def _read_decord(scan: _Scan, wanted: np.ndarray) -> np.ndarray | None:
    """Frames ``wanted`` (sorted frame numbers) from decord, or None when decord fails or disagrees with the
    probe about the clip's frames."""
    decord = _decord()
    if decord is None:
        return None
    try:
        reader = decord.VideoReader(scan.path, ctx=decord.cpu(0), num_threads=DECORD_THREADS)
        if len(reader) != scan.num_frames:
            return None
        # decord's own frame -> timestamp table must match the probe's for the frames asked for
        stamps = reader.get_frame_timestamp([0, *wanted.tolist()])[:, 0].astype(np.float64)
        interval = (float(np.median(np.diff(scan.frame_times))) if scan.num_frames > 1
                    else scan.last_frame_duration)
        if np.max(np.abs((stamps[1:] - stamps[0]) - scan.frame_times[wanted])) > max(0.5 * interval, 0.002):
            return None
        frames = reader.get_batch(wanted.tolist()).asnumpy()
    except Exception:  # noqa: BLE001 - decord raises DECORDError, RuntimeError, IndexError... PyAV takes over
        return None
    if frames.shape != (len(wanted), scan.height, scan.width, 3) or frames.dtype != np.uint8:
        return None  # e.g. the 4- or 6-channel frames of a width decord_bad_width does not know
    return frames


def _read_pyav(scan: _Scan, wanted: np.ndarray) -> np.ndarray:
    """Frames ``wanted`` (sorted frame numbers) decoded with PyAV.

    Frames leave the decoder in display order; a target is answered by the last frame whose pts <= the
    target's pts. The reader seeks to the keyframe before a target when that skips frames and otherwise
    decodes straight on. If a seek lands after its target (a wrong index or keyframe flag), it starts again
    from the beginning of the file and never seeks again.
    """
    import av

    targets = scan.pts_ticks[wanted]
    out: list = [None] * len(targets)
    quarter_turns = (scan.rotation // 90) % 4
    can_seek = scan.codec not in NO_SEEK_CODECS

    def as_displayed(frame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")
        return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb

    def keyframe_before(tick) -> int | None:
        j = int(np.searchsorted(scan.keyframe_ticks, tick, side="right")) - 1
        return int(scan.keyframe_ticks[j]) if j >= 0 else None

    def worth_seeking(current_tick: int, keyframe_tick: int) -> bool:
        a, b = np.searchsorted(scan.pts_ticks, [current_tick, keyframe_tick])
        return b - a > MIN_FRAMES_SKIPPED_BY_SEEK

    def open_stream():
        container = _open_av(scan.path)
        stream = _video_stream(container)
        stream.thread_count = PYAV_THREADS
        return container, stream

    i, restarted = 0, False
    container, stream = open_stream()
    try:
        at_start = True
        while i < len(targets):
            keyframe = keyframe_before(targets[i]) if can_seek and not restarted else None
            if keyframe is not None and not (at_start and keyframe <= scan.pts_ticks[0]):
                container.seek(keyframe, stream=stream, backward=True, any_frame=False)
            at_start = False
            previous, jumped, overshot = None, False, False
            try:
                for frame in container.decode(stream):
                    tick = frame.pts if frame.pts is not None else frame.dts
                    if tick is None:
                        continue
                    if previous is None and tick > targets[i]:
                        if not restarted:
                            overshot = True
                            break
                        while i < len(targets) and targets[i] < tick:  # before the first decodable frame
                            out[i] = as_displayed(frame)
                            i += 1
                    while i < len(targets) and tick > targets[i]:  # previous is the frame shown at targets[i]
                        out[i] = as_displayed(previous)
                        i += 1
                    if i == len(targets):
                        break
                    previous = frame
                    if can_seek and not restarted:
                        keyframe = keyframe_before(targets[i])
                        if keyframe is not None and keyframe > tick and worth_seeking(tick, keyframe):
                            jumped = True  # targets[i] >= keyframe > tick: nothing is pending
                            break
                else:  # end of the stream: the last frame stays on screen to the end
                    while i < len(targets) and previous is not None:
                        out[i] = as_displayed(previous)
                        i += 1
                    if i < len(targets):
                        raise VideoError(f"cannot decode its frames ({scan.codec}, {scan.decoder} decoder): the "
                                         "decoder returned none after a seek")
            except av.error.FFmpegError as e:
                raise VideoError(f"cannot decode its frames ({scan.codec}, {scan.decoder} decoder: "
                                 f"{_ffmpeg_message(e)})") from e
            if overshot:
                restarted = True
                container.close()
                container, stream = open_stream()
                at_start = True
            elif not jumped and i < len(targets):
                raise VideoError(f"cannot decode every frame ({scan.codec}, {scan.decoder} decoder)")
    finally:
        container.close()
    return np.stack(out)
