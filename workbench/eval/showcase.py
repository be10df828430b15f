"""Base vs fine-tuned, shown: the before/after table of an evaluation with ``--compare-base``, and the
two models' videos side by side (same prompts and seeds) as a PNG grid and an mp4."""

from __future__ import annotations

import json
from pathlib import Path

ROWS = (("accuracy/colour", "prompt accuracy: colour", "{:.0%}"),
        ("accuracy/shape", "prompt accuracy: shape", "{:.0%}"),
        ("accuracy/direction", "prompt accuracy: direction", "{:.0%}"),
        ("accuracy/all", "prompt accuracy: all three", "{:.0%}"),
        ("fvd", "FVD (learned detector, lower is better)", "{:.1f}"),
        ("clip_score", "CLIP score (learned CLIP)", "{:.2f}"))


def metric_rows(metrics_by_suite: dict[str, dict[str, float]]) -> tuple:
    """``ROWS`` and, after them, a row for every other metric the suites produced for both models (a suite's
    per-video metrics, workbench.eval.metrics: image fidelity's, a third party's), by its name."""
    known = {key for key, _, _ in ROWS}
    first = next(iter(metrics_by_suite.values()), {})
    extra = sorted(k[len("eval/"):] for k in first if k.startswith("eval/") and f"{k}_base" in first
                   and not k.endswith(("_base", "_difference", "_ci_low", "_ci_high"))
                   and k[len("eval/"):] not in known and not k.startswith("eval/num_"))
    return (*ROWS, *((name, name.replace("_", " "), "{:.3g}") for name in extra))


def before_after_table(metrics_by_suite: dict[str, dict[str, float]]) -> str:
    """A markdown table: one row per metric, base and fine-tuned columns per suite (``eval/<m>`` and
    ``eval/<m>_base`` from each suite's metrics)."""
    suites = list(metrics_by_suite)
    head = "| metric | " + " | ".join(f"{s}: base | {s}: fine-tuned" for s in suites) + " |"
    lines = [head, "|---|" + "---|---|" * len(suites)]
    for key, label, fmt in metric_rows(metrics_by_suite):
        if not all(f"eval/{key}" in m for m in metrics_by_suite.values()):
            continue
        cells = []
        for m in metrics_by_suite.values():
            for k in (f"eval/{key}_base", f"eval/{key}"):
                low, high = m.get(f"{k}_ci_low"), m.get(f"{k}_ci_high")
                cells.append(fmt.format(m[k]) + (f" [{fmt.format(low)}, {fmt.format(high)}]" if low is not None
                                                  else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    n = next(iter(metrics_by_suite.values())).get("eval/num_videos")
    if n:
        lines.append(f"\n{int(n)} videos per model and suite; the same prompts and seeds for both models. "
                     "[low, high]: 95 % bootstrap intervals over the videos.")
    return "\n".join(lines)


def side_by_side(eval_dir: str | Path, out_dir: str | Path, fps: float = 8.0, max_videos: int = 12) -> dict:
    """``grid.png`` (a row per video: base first/middle/last frame | fine-tuned first/middle/last frame) and
    ``side_by_side.mp4`` (each video as base | fine-tuned, one after the other) from the mp4s an
    evaluation with ``compare_base`` wrote (its results.json names them)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from workbench.common import read_video, write_video

    eval_dir, out = Path(eval_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in json.loads((eval_dir / "results.json").read_text())["videos"] if r.get("base_path")]
    rows = rows[:max_videos]
    if not rows:
        raise ValueError(f"{eval_dir}: no base videos in results.json; evaluate with compare_base")
    pairs = [(read_video(eval_dir / r["base_path"]), read_video(eval_dir / r["path"])) for r in rows]
    gap = 4
    grid_rows = []
    for base, tuned in pairs:
        f = min(len(base), len(tuned))
        picks = (0, f // 2, f - 1)
        sep = np.full((base.shape[1], gap, 3), 255, np.uint8)
        grid_rows.append(np.concatenate([*[base[i] for i in picks], sep, sep, *[tuned[i] for i in picks]], axis=1))
    grid = np.concatenate([np.pad(r, ((0, gap), (0, 0), (0, 0)), constant_values=255) for r in grid_rows], axis=0)
    header = 14
    image = Image.new("RGB", (grid.shape[1], grid.shape[0] + header), (255, 255, 255))
    image.paste(Image.fromarray(grid), (0, header))
    draw = ImageDraw.Draw(image)
    draw.text((2, 1), "base (first, middle, last frame)", fill=(0, 0, 0))
    draw.text((grid.shape[1] // 2 + gap, 1), "fine-tuned", fill=(0, 0, 0))
    png = out / "grid.png"
    image.save(png)

    mp4 = out / "side_by_side.mp4"
    frames = []
    for base, tuned in pairs:
        sep = np.full((base.shape[1], gap, 3), 255, np.uint8)
        frames += [np.concatenate([base[i], sep, tuned[i]], axis=1) for i in range(min(len(base), len(tuned)))]
    write_video(mp4, np.stack(frames), fps, crf=10)
    (out / "prompts.txt").write_text("".join(f"{i:02d} seed {r['seed']}: {r['prompt']}\n" for i, r in enumerate(rows)))
    return {"png": png, "mp4": mp4}
