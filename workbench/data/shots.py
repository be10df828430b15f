"""Shot boundaries: where a video cuts or dissolves from one shot to the next.

``detect_transitions(path, start=None, end=None, options=DetectOptions()) -> list[Transition]``

Times are seconds on :attr:`workbench.data.decoding.VideoInfo.frame_times`' axis (from the first frame's
presentation time), so a variable-frame-rate file is right: frames are numbered by their real timestamps
(the probe's), never by an average rate.

How
---
One PyAV pass decodes the file (or the window) with the decoder's threads, each frame scaled down to
``analysis_width`` px on its long side (the scaler runs in FFmpeg, so 1080p costs little more than its
decode) and turned as displayed. Two detectors look at the small frames:

* **hard cuts**: PySceneDetect's ``AdaptiveDetector`` (its HSV content score against a rolling average of
  the neighbouring frames' scores, so fast motion and camera shake, whose scores are high everywhere, do not
  fire). A cut whose frame before it looks like a frame shortly after it (a flash: a photographer's flash, a
  one-frame white or black frame) is dropped: a flash is not a new shot.
* **gradual transitions** (dissolves, fades to and from black or white): PySceneDetect has no detector for
  them (its ``ThresholdDetector`` sees only fades through black, and its content and hash detectors compare
  consecutive frames, whose differences are small all through a dissolve). So: the HSV colour histogram of
  each frame against the frame ``gradual_window`` seconds earlier (half the L1 distance of the normalised
  histograms, 0 to 1). A histogram hardly changes with motion inside a shot but does across two shots; a run
  of frames whose distance stays above ``gradual_threshold`` for longer than a hard cut explains is a gradual
  transition, reported as the span ``[first frame of the run - window, last frame of the run]`` (a
  conservative span: it covers the dissolve and up to one window either side).

The same pass gives :mod:`workbench.curate.quality` its per-frame statistics (``frame_stats=True``), so the
curation stage decodes each file once.
"""

from __future__ import annotations

import gc
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from workbench.data.decoding import VideoError, _get_scan, _open_av, _video_stream

CUT, GRADUAL = "cut", "gradual"


@dataclass(frozen=True)
class Transition:
    """A shot boundary: a cut (``start == end``: the first frame of the new shot is shown from ``start``) or a
    gradual transition spanning ``[start, end]`` seconds."""

    start: float
    end: float
    kind: str

    def crosses(self, a: float, b: float) -> bool:
        """Whether the window ``[a, b]`` holds this transition (a cut strictly after ``a``: a window that starts
        at a cut holds only the new shot)."""
        if self.kind == CUT:
            return a < self.start <= b
        return self.start < b and self.end > a


@dataclass(frozen=True)
class DetectOptions:
    """Shot detection's thresholds (``workbench data split --help`` names each)."""

    cut_threshold: float = 3.0  # AdaptiveDetector's adaptive_threshold: a frame's score over its neighbours'
    min_content: float = 15.0  # AdaptiveDetector's min_content_val: the least HSV change that can be a cut
    min_shot: float = 0.5  # seconds: cuts closer than this are merged (PySceneDetect's min_scene_len)
    flash_window: float = 0.25  # seconds after a cut searched for a frame like the one before it (a flash)
    gradual_threshold: float = 0.3  # histogram distance (0..1) over the window that marks a gradual transition
    gradual_window: float = 0.5  # seconds between the frames a gradual transition is measured over
    analysis_width: int = 256  # px of the long side the frames are scaled to for detection and scoring

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Analysis:
    """One decoding pass over a file or window: what was found, and per-frame statistics for the scores."""

    duration: float
    frame_times: np.ndarray  # of the whole file
    first: int  # number of the first frame analysed
    count: int
    transitions: list[Transition]
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # per analysed frame
    size: tuple[int, int] = (0, 0)  # (height, width) of the file as displayed
    analysed_size: tuple[int, int] = (0, 0)


HIST_BINS = [16, 4, 4]


def _histogram(hsv: np.ndarray) -> np.ndarray:
    import cv2

    h = cv2.calcHist([hsv], [0, 1, 2], None, HIST_BINS, [0, 180, 0, 256, 0, 256]).reshape(-1)
    return h / max(float(h.sum()), 1.0)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * float(np.abs(a - b).sum())


def analyse(path: str | Path, *, start: float | None = None, end: float | None = None,
            options: DetectOptions = DetectOptions(), frame_stats: bool = False) -> Analysis:
    """Decode ``path`` once (between ``start`` and ``end`` seconds when given) at the analysis size and detect
    its transitions; ``frame_stats`` also keeps the per-frame statistics :mod:`workbench.curate.quality` scores
    from. Raises VideoError."""
    import cv2
    from scenedetect import FrameTimecode
    from scenedetect.detectors import AdaptiveDetector

    try:
        scan = _get_scan(path)
    except VideoError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the demuxer says, it is an unreadable video
        raise VideoError(f"cannot read: {(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}") from e
    times = scan.frame_times
    n_all = len(times)
    duration = float(scan.duration)
    lo = 0 if start is None else max(0, int(np.searchsorted(times, start, side="right")) - 1)
    hi = n_all if end is None else min(n_all, int(np.searchsorted(times, end, side="right")) + 1)
    rate = (n_all - 1) / float(times[-1]) if n_all > 1 and times[-1] > 0 else 25.0
    coded_h, coded_w = scan.coded_height, scan.coded_width
    scale = options.analysis_width / max(coded_h, coded_w)
    small_w = max(16, int(round(coded_w * scale / 2)) * 2)
    small_h = max(16, int(round(coded_h * scale / 2)) * 2)
    turns = (scan.rotation // 90) % 4

    detector = AdaptiveDetector(adaptive_threshold=options.cut_threshold, min_content_val=options.min_content,
                                min_scene_len=max(1, int(round(options.min_shot * rate))))
    hists: list[np.ndarray] = []
    cut_frames: list[int] = []
    stats: dict[str, list] = {k: [] for k in ("luma", "dark", "bright", "sharpness", "motion", "dhash",
                                              "top", "bottom", "left", "right")} if frame_stats else {}
    prev_gray = None
    expected = lo
    from av.video.reformatter import VideoReformatter

    # One scaler, single-threaded, freed when this call returns: a scaler with slice threads left for the
    # garbage collector can be freed inside a forked child (subprocess's preexec_fn), whose threads are gone, and
    # hang it (seen with imageio-ffmpeg's Popen after a split in the same process).
    scaler = VideoReformatter()
    container = _open_av(scan.path)
    try:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        if lo > 0:
            keys = scan.keyframe_ticks
            j = int(np.searchsorted(keys, scan.pts_ticks[lo], side="right")) - 1
            if j > 0:
                container.seek(int(keys[j]), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is None:
                index = expected
            else:
                index = int(np.searchsorted(scan.pts_ticks, frame.pts, side="left"))
            expected = index + 1
            if index < lo:
                continue
            if index >= hi:
                break
            bgr = scaler.reformat(frame, small_w, small_h, "bgr24", threads=1).to_ndarray()
            if turns:
                bgr = np.ascontiguousarray(np.rot90(bgr, turns))
            k = len(hists)
            cuts = detector.process_frame(FrameTimecode(lo + k, fps=rate), bgr)
            cut_frames += [c.frame_num for c in cuts]
            hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
            hists.append(_histogram(hsv))
            if frame_stats:
                gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
                _frame_stats(stats, gray, prev_gray)
                prev_gray = gray
    except VideoError:
        raise
    except Exception as e:  # noqa: BLE001 - a decoder error half-way: the file is damaged
        raise VideoError(f"cannot decode: {(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}") from e
    finally:
        container.close()
        del scaler, container
        release_pyav_scalers()
    if not hists:
        raise VideoError("no frames decoded")
    cut_frames += [c.frame_num for c in detector.post_process(FrameTimecode(lo + len(hists), fps=rate))]
    transitions = _transitions(times, lo, hists, sorted(set(cut_frames)), rate, options)
    height, width = scan.height, scan.width
    small = (small_w, small_h) if turns % 2 else (small_h, small_w)
    return Analysis(duration, times, lo, len(hists), transitions,
                    {k: np.asarray(v) for k, v in stats.items()}, (height, width), small)


def release_pyav_scalers() -> None:
    """Free, now and in this thread, the scaler PyAV keeps per thread (``VideoFrame.reformat``/``to_ndarray`` and
    encoders converting pixel formats share one in a thread-local, with swscale's slice threads) and PyAV's other
    garbage. Left alive, it is freed inside the child of any later ``fork`` from another thread (subprocess with
    a ``preexec_fn``, as imageio-ffmpeg's writer uses), whose copies of those threads do not exist: the child
    hangs in ``pthread_cond_destroy``. Called after every decoding or encoding pass of the curation stage."""
    try:
        from av.video import frame as av_frame

        local = getattr(av_frame, "_thread_local", None)
        if local is not None and getattr(local, "reformatter", None) is not None:
            del local.reformatter
    except Exception:  # noqa: BLE001 - another PyAV keeps no such cache: nothing to free
        pass
    gc.collect()


def _frame_stats(stats: dict, gray: np.ndarray, prev_gray: np.ndarray | None) -> None:
    """Per frame: mean luma, fraction crushed (< 16) and clipped (> 239), variance of the Laplacian, mean
    absolute difference to the previous frame, a 64-bit dHash, and the dark border rows/columns."""
    import cv2

    stats["luma"].append(float(gray.mean()))
    stats["dark"].append(float((gray < 16).mean()))
    stats["bright"].append(float((gray > 239).mean()))
    stats["sharpness"].append(float(cv2.Laplacian(gray, cv2.CV_32F).var()))
    stats["motion"].append(np.nan if prev_gray is None else float(cv2.absdiff(gray, prev_gray).mean()))
    tiny = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA)
    bits = (tiny[:, 1:] > tiny[:, :-1]).reshape(-1)
    stats["dhash"].append(int(np.packbits(bits).view(">u8")[0]))
    rows, cols = gray.max(axis=1), gray.max(axis=0)
    stats["top"].append(_run(rows))
    stats["bottom"].append(_run(rows[::-1]))
    stats["left"].append(_run(cols))
    stats["right"].append(_run(cols[::-1]))


BORDER_LEVEL = 24  # a row or column whose brightest pixel is below this is border (black bars)


def _run(profile: np.ndarray) -> int:
    above = np.flatnonzero(profile >= BORDER_LEVEL)
    return int(above[0]) if above.size else len(profile)


def _transitions(times: np.ndarray, lo: int, hists: list[np.ndarray], cuts: list[int], rate: float,
                 options: DetectOptions) -> list[Transition]:
    n = len(hists)
    h = np.stack(hists)
    flash = max(1, int(round(options.flash_window * rate)))
    kept: list[int] = []
    for c in cuts:
        i = c - lo  # first frame of the new shot, in the analysed frames
        if i <= 0 or i >= n:
            continue
        before = h[i - 1]
        after = [_distance(before, h[j]) for j in range(i + 1, min(n, i + 1 + flash))]
        if after and min(after) < 0.5 * options.gradual_threshold and _distance(before, h[i]) > min(after) * 2:
            continue  # the picture comes back: a flash, not a cut
        kept.append(i)
    found = [Transition(float(times[lo + i]), float(times[lo + i]), CUT) for i in kept]

    w = max(1, int(round(options.gradual_window * rate)))
    if n > w:
        far = 0.5 * np.abs(h[w:] - h[:-w]).sum(axis=1)  # far[t - w]: frame t against frame t - w
        high = np.flatnonzero(far >= options.gradual_threshold) + w
        for run in np.split(high, np.flatnonzero(np.diff(high) > 1) + 1) if high.size else []:
            s, e = int(run[0]), int(run[-1])
            if e - s + 1 <= flash:
                continue  # a brief event (a flash, or a flash seen from a window later), not a transition
            a = max(0, s - w)
            explained = [i for i in kept if a < i <= e + 1]
            if explained and (e - s + 1) <= w + max(2, flash):
                continue  # a hard cut seen across the window
            if any(_distance(h[a], h[j]) < 0.5 * options.gradual_threshold for j in range(e + 1, min(n, e + 1 + flash))):
                continue  # the picture comes back after the run: a flash or a passing object
            found.append(Transition(float(times[lo + a]), float(times[lo + e]), GRADUAL))
    found.sort(key=lambda t: (t.start, t.end))
    return found


def detect_transitions(path: str | Path, *, start: float | None = None, end: float | None = None,
                       options: DetectOptions = DetectOptions()) -> list[Transition]:
    """The cuts and gradual transitions in ``path`` (between ``start`` and ``end`` seconds when given), in
    order. Raises VideoError."""
    return analyse(path, start=start, end=end, options=options).transitions


def shots(transitions: list[Transition], duration: float) -> list[tuple[float, float]]:
    """The shots between transitions: ``[(start, end)]`` in seconds, covering ``[0, duration]``."""
    out, t = [], 0.0
    for tr in transitions:
        if tr.start > t:
            out.append((t, tr.start))
        t = max(t, tr.end)
    if duration > t:
        out.append((t, duration))
    return [(a, b) for a, b in out if not math.isclose(a, b)]
