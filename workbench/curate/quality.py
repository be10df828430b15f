"""Quality scores of a clip, one manifest column each, from the frames shot detection already decoded.

Every score is computed on the analysis-size frames (``DetectOptions.analysis_width`` px on the long side,
256 by default) over every frame of the clip's range, so scores compare between clips of any resolution:

``motion``
    Mean absolute luma difference between consecutive frames (0-255 levels). A static shot (a tripod on an
    empty room, a title card, a frozen frame) scores below 1; ordinary footage 2-20. ``--min-motion``.
``exposure``
    Mean luma (0-255). ``underexposed`` / ``overexposed``: the fraction of pixels crushed to black (< 16) or
    clipped to white (> 239), averaged over the frames. ``--max-underexposed`` / ``--max-overexposed``.
``sharpness``
    Variance of the Laplacian of the luma (the usual blur measure): a defocused or motion-blurred clip scores
    low. It depends on content (a blue sky is "blurry"), so it is a ranking, not a verdict. ``--min-sharpness``.
``borders``
    ``[top, bottom, left, right]`` in pixels of the file as displayed: black bars (letterbox, pillarbox) present
    in every frame of the clip. Reported, not cropped: training's centre crop keeps what lies inside them, so a
    clip with bars trains on the bars; ``--max-border`` (a fraction of the height or width) drops such clips.
``dhash``
    A 64-bit difference hash (hex) of the clip's middle frame. ``duplicate_of`` names the first clip (``source``
    and ``start``) whose hashes at 1/4, 1/2 and 3/4 of the clip all lie within ``--duplicate-distance`` bits
    (default 6): a re-upload, the same take cut twice. ``--drop-duplicates`` drops them.
"""

from __future__ import annotations

import numpy as np

DEFAULT_DUPLICATE_DISTANCE = 6


def clip_scores(stats: dict[str, np.ndarray], first: int, last: int, size: tuple[int, int],
                analysed: tuple[int, int]) -> dict:
    """The scores of the analysed frames ``first`` to ``last`` (inclusive, indices into ``stats``)."""
    sl = slice(first, last + 1)
    motion = stats["motion"][sl]
    motion = motion[np.isfinite(motion)]
    height, width = size
    ah, aw = analysed
    def px(v: float, full: int, small: int) -> int:
        return int(round(v * full / max(small, 1)))
    n = last - first + 1
    hashes = [int(stats["dhash"][first + int(round(q * (n - 1)))]) for q in (0.25, 0.5, 0.75)]
    return {
        "motion": round(float(motion.mean()) if motion.size else 0.0, 3),
        "exposure": round(float(stats["luma"][sl].mean()), 2),
        "underexposed": round(float(stats["dark"][sl].mean()), 4),
        "overexposed": round(float(stats["bright"][sl].mean()), 4),
        "sharpness": round(float(stats["sharpness"][sl].mean()), 2),
        "borders": [px(stats["top"][sl].min(), height, ah), px(stats["bottom"][sl].min(), height, ah),
                    px(stats["left"][sl].min(), width, aw), px(stats["right"][sl].min(), width, aw)],
        "dhash": f"{hashes[1]:016x}",
        "dhashes": [f"{h:016x}" for h in hashes],
    }


def mark_duplicates(rows: list[dict], max_distance: int = DEFAULT_DUPLICATE_DISTANCE) -> int:
    """Set ``duplicate_of`` on each row whose three hashes all lie within ``max_distance`` bits of an earlier
    row's; returns how many. Quadratic in rows with a numpy inner loop (fine to tens of thousands of clips)."""
    if not rows:
        return 0
    hashes = np.array([[int(h, 16) for h in r["dhashes"]] for r in rows], dtype=np.uint64)
    count = 0
    for i in range(1, len(rows)):
        x = np.bitwise_xor(hashes[:i], hashes[i])
        bits = np.unpackbits(x.view(np.uint8).reshape(i, 3, 8), axis=-1).sum(-1)
        close = np.flatnonzero((bits <= max_distance).all(axis=1))
        close = [j for j in close if "duplicate_of" not in rows[j]]
        rows[i].pop("duplicate_of", None)
        if close:
            j = close[0]
            rows[i]["duplicate_of"] = f"{rows[j]['source']}@{rows[j]['start']:.3f}"
            count += 1
    return count


THRESHOLDS = {  # option -> (score, comparison, what the user reads)
    "min_motion": ("motion", "<", "static (motion {v} < {t})"),
    "max_underexposed": ("underexposed", ">", "too dark ({v} of pixels crushed > {t})"),
    "max_overexposed": ("overexposed", ">", "blown out ({v} of pixels clipped > {t})"),
    "min_sharpness": ("sharpness", "<", "blurry (sharpness {v} < {t})"),
}


def drop_reason(row: dict, thresholds: dict, size: tuple[int, int] | None = None) -> str | None:
    """Why ``row`` is dropped under ``thresholds`` (None: kept)."""
    for option, (score, op, text) in THRESHOLDS.items():
        t = thresholds.get(option)
        if t is None:
            continue
        v = row[score]
        if (v < t) if op == "<" else (v > t):
            return text.format(v=v, t=t)
    t = thresholds.get("max_border")
    if t is not None and size is not None:
        top, bottom, left, right = row["borders"]
        h, w = size
        if (top + bottom) > t * h or (left + right) > t * w:
            return f"black borders {row['borders']} (more than {t:g} of the frame)"
    if thresholds.get("drop_duplicates") and row.get("duplicate_of"):
        return f"near-duplicate of {row['duplicate_of']}"
    return None
