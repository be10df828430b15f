"""An evaluation's results: ``results.json``, ``results.md`` and a first-frame grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.common import atomic_write_bytes, atomic_write_json, atomic_write_text
from workbench.eval.scoring import SuiteScores
from workbench.eval.suite import Suite


def fvd_comparability(suite: Suite, num_videos: int, num_reference: int) -> dict:
    """Whether the FVD can be compared with published numbers, and if not, why.

    Only ``protocol: stylegan-v`` can be (StyleGAN-V's ``fvd2048_16f``: its I3D file, checked by sha256
    when the suite is loaded; real clips sampled as it does; 2048 generated vs 2048 real videos). With
    fewer videos FVD is biased upward (evals/README.md, the bias table), so the conditions a run misses
    are listed. ``protocol: workbench`` numbers are relative to the suite: compare them only with the same
    suite, reference set and video count.
    """
    from workbench.metrics.fvd import PUBLISHED_NUM_VIDEOS

    if suite.protocol != "stylegan-v":
        return {"protocol": suite.protocol, "comparable": False,
                "note": f"FVD relative to suite {suite.name} ({num_videos} generated vs {num_reference} reference "
                        "videos, the workbench protocol): compare it only with runs of the same suite and counts, "
                        "not with published FVD"}
    missing = []
    if num_videos < PUBLISHED_NUM_VIDEOS:
        missing.append(f"{num_videos} generated videos (needs {PUBLISHED_NUM_VIDEOS})")
    if num_reference < PUBLISHED_NUM_VIDEOS:
        missing.append(f"{num_reference} reference videos (needs {PUBLISHED_NUM_VIDEOS})")
    note = ("comparable with published StyleGAN-V FVD (fvd2048_16f)" if not missing else
            "NOT comparable with published FVD: " + "; ".join(missing) + " (FVD is biased upward at small N)")
    return {"protocol": suite.protocol, "comparable": not missing, "missing": missing, "note": note}


def suite_results(suite: Suite, scores: SuiteScores, base: SuiteScores | None = None, *, out: Path | None = None,
                  info: dict | None = None, intervals: dict | None = None) -> dict:
    """The content of results.json: settings, aggregate metrics (with ``intervals``, the bootstrap intervals
    as ``eval/<name>_ci_low`` / ``_ci_high`` too), one row per video."""
    def rel(p: Path | None) -> str | None:
        if p is None:
            return None
        return p.relative_to(out).as_posix() if out is not None and p.is_relative_to(out) else str(p)

    metrics = scores.metrics()
    if base is not None:
        metrics.update(base.metrics("_base"))
    for name, interval in (intervals or {}).items():
        if name.endswith("_difference"):
            metrics[f"eval/{name}"] = interval.value
        metrics[f"eval/{name}_ci_low"], metrics[f"eval/{name}_ci_high"] = interval.low, interval.high
    rows = []
    base_rows = {(v.prompt_index, v.seed): v for v in base.videos} if base is not None else {}
    for v in scores.videos:
        row = {"prompt_index": v.prompt_index, "prompt": v.prompt, "seed": v.seed, "clip_score": v.clip_score,
               "path": rel(v.path)}
        if suite.images:
            row["image"] = str(suite.images[v.prompt_index])
        row.update(v.values or {})
        if v.oracle is not None:
            row["oracle"] = v.oracle
        if base is not None:
            b = base_rows.get((v.prompt_index, v.seed))
            row.update(base_clip_score=b.clip_score if b else None, base_path=rel(b.path) if b else None)
            row.update({f"base_{k}": value for k, value in ((b.values or {}) if b else {}).items()})
            if b is not None and b.oracle is not None:
                row["base_oracle"] = b.oracle
        rows.append(row)
    accuracy = None
    if scores.accuracy is not None:
        accuracy = {"per_prompt": scores.accuracy.per_prompt}
        if base is not None and base.accuracy is not None:
            accuracy["per_prompt_base"] = base.accuracy.per_prompt
    return {"suite": suite.name, "suite_file": str(suite.path) if suite.path else None,
            "settings": suite.settings(), **(info or {}), "metrics": metrics,
            "fvd_comparability": fvd_comparability(suite, scores.num_videos, scores.num_reference_videos),
            "accuracy": accuracy, "per_video_metrics": scores.value_names(),
            "intervals": {k: v.as_dict() for k, v in (intervals or {}).items()}, "videos": rows}


def results_markdown(results: dict) -> str:
    """results.md: the aggregate table and one row per video."""
    m = results["metrics"]
    base = "eval/clip_score_base" in m
    lines = [f"# Evaluation: suite `{results['suite']}`", ""]
    for key in ("model", "lora", "checkpoint", "global_step", "base_model", "run_id"):
        if results.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ')}: `{results[key]}`")
    s = results["settings"]
    lines += [f"- settings: {s['num_prompts']} prompts x {len(s['seeds'])} seeds, {s['num_frames']} frames "
              f"{s['height']}x{s['width']} @ {s['fps']:g} fps, {s['num_inference_steps']} steps ({s['scheduler']}), "
              f"guidance {s['guidance_scale']:g}"]
    if s.get("approximate"):
        lines.append(f"- **approximate generation**: `{s['approximate']}` (not the exact sampler; compare only with "
                     "runs that used the same lever)")
    lines.append("")
    lines += ["| metric | model |" + (" base |" if base else ""), "|---|---|" + ("---|" if base else "")]
    names = [k[len("eval/"):] for k in m if k.startswith("eval/accuracy/") and not k.endswith("_base")]
    def cell(key: str) -> str:
        low, high = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
        return f"{m[key]:.4g}" + (f" [{low:.4g}, {high:.4g}]" if low is not None else "")

    values = results.get("per_video_metrics") or []  # image fidelity's, for suites with images
    for name in (*names, "clip_score", "fvd", *values, "num_videos"):
        row = f"| `eval/{name}` | {cell(f'eval/{name}')} |"
        lines.append(row + (f" {cell(f'eval/{name}_base')} |" if base else ""))
    for name in ("clip_score_difference", "fvd_difference", *(f"{v}_difference" for v in values)):
        if f"eval/{name}" in m:
            lines.append(f"| `eval/{name}` (model - base, paired) | {cell(f'eval/{name}')} |" + (" |" if base else ""))
    lines += [f"| `eval/num_reference_videos` | {m['eval/num_reference_videos']:.0f} |" + (" |" if base else ""), ""]
    if results.get("intervals"):
        level = next(iter(results["intervals"].values()))["confidence"]
        lines += [f"[low, high]: {level:.0%} bootstrap intervals, resampling videos (FVD: against the fixed "
                  "reference statistics, recentred by the bootstrap's bias estimate); differences paired by "
                  "prompt and seed.", ""]
    comparability = results.get("fvd_comparability") or {}
    if comparability:
        lines += [f"FVD ({comparability['protocol']} protocol): {comparability['note']}.", ""]
    if results.get("provenance"):
        lines += ["Metric networks: " + ", ".join(f"{k} `{v}`" for k, v in results["provenance"].items()), ""]
    if results.get("accuracy"):
        per, per_base = results["accuracy"]["per_prompt"], results["accuracy"].get("per_prompt_base")
        lines += ["Prompt accuracy (the shapes world's oracle: share of videos whose colour / shape / direction "
                  "is the prompt's)" + (", model vs base" if per_base else "") + ":", "",
                  "| prompt | colour | shape | direction | all |", "|---|---|---|---|---|"]
        for prompt, acc in per.items():
            cells = [f"{acc[a]:.2f}" + (f" ({per_base[prompt][a]:.2f})" if per_base and prompt in per_base else "")
                     for a in ("colour", "shape", "direction", "all")]
            lines.append(f"| {prompt} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["| # | prompt | seed | CLIP |" + (" CLIP (base) |" if base else "") + "".join(f" {v} |" for v in values)
              + " video |", "|---|---|---|---|" + ("---|" if base else "") + "---|" * len(values) + "---|"]
    for r in results["videos"]:
        prompt = r["prompt"].replace("|", "\\|")
        cells = f"| {r['prompt_index']} | {prompt} | {r['seed']} | {r['clip_score']:.3f} |"
        if base:
            cells += f" {r['base_clip_score']:.3f} |" if r.get("base_clip_score") is not None else " |"
        cells += "".join(f" {r[v]:.3f} |" if r.get(v) is not None else " |" for v in values)
        lines.append(cells + f" `{r['path']}` |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, results: dict) -> None:
    """results.json and results.md, each written atomically (a full disk: one line naming the file)."""
    atomic_write_json(out / "results.json", results, indent=2, what="the results")
    atomic_write_text(out / "results.md", results_markdown(results), what="the results table")


def first_frame_uint8(frame):
    """A video's first frame (C, H, W) in [0, 1] as the grid shows it: uint8 (H, W, C) numpy."""
    return (frame.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()


def first_frame_grid(columns: dict[str, list[Any]], path: Path, max_side: int = 256) -> Path:
    """A PNG grid of first frames: one row per prompt, one labelled column per model, written atomically.

    ``columns`` maps a label to one uint8 (H, W, C) frame per prompt (``first_frame_uint8``).
    """
    import io

    from PIL import Image, ImageDraw

    labels = list(columns)
    rows = len(columns[labels[0]])
    h, w, _ = columns[labels[0]][0].shape
    scale = min(1.0, max_side / max(h, w))
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    pad, header = 4, 16
    grid = Image.new("RGB", (len(labels) * (cw + pad) + pad, header + rows * (ch + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(labels):
        x = pad + c * (cw + pad)
        draw.text((x, 2), label, fill=(0, 0, 0))
        for r, frame in enumerate(columns[label]):
            img = Image.fromarray(frame)
            if (cw, ch) != (w, h):
                img = img.resize((cw, ch), Image.BILINEAR)
            y = header + r * (ch + pad)
            grid.paste(img, (x, y))
            draw.text((x + 2, y + 1), str(r), fill=(255, 255, 255))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue(), what="the first-frame grid")
    return path
