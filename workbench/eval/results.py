"""An evaluation's results: ``results.json``, ``results.md`` and a first-frame grid."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workbench.eval.generation import VideoBatch
from workbench.eval.scoring import SuiteScores
from workbench.eval.suite import Suite


def fvd_note(num_videos: int, num_reference: int) -> str | None:
    """Why an FVD is not comparable to published numbers, or None when both sets are large enough."""
    from workbench.metrics.fvd import I3D_FEATURE_DIM, PUBLISHED_NUM_VIDEOS

    small = min(num_videos, num_reference)
    if small > I3D_FEATURE_DIM:
        return None
    return (f"FVD from {num_videos} generated and {num_reference} reference videos (<= {I3D_FEATURE_DIM} I3D "
            f"feature dims): rank-deficient covariances; compare only within this suite at the same counts "
            f"(published FVD uses {PUBLISHED_NUM_VIDEOS} per set).")


def suite_results(suite: Suite, scores: SuiteScores, base: SuiteScores | None = None, *, out: Path | None = None,
                  info: dict | None = None) -> dict:
    """The content of results.json: settings, aggregate metrics, one row per video."""
    def rel(p: Path | None) -> str | None:
        if p is None:
            return None
        return p.relative_to(out).as_posix() if out is not None and p.is_relative_to(out) else str(p)

    metrics = scores.metrics()
    if base is not None:
        metrics.update(base.metrics("_base"))
    rows = []
    base_rows = {(v.prompt_index, v.seed): v for v in base.videos} if base is not None else {}
    for v in scores.videos:
        row = {"prompt_index": v.prompt_index, "prompt": v.prompt, "seed": v.seed, "clip_score": v.clip_score,
               "path": rel(v.path)}
        if base is not None:
            b = base_rows.get((v.prompt_index, v.seed))
            row.update(base_clip_score=b.clip_score if b else None, base_path=rel(b.path) if b else None)
        rows.append(row)
    return {"suite": suite.name, "suite_file": str(suite.path) if suite.path else None,
            "settings": suite.settings(), **(info or {}), "metrics": metrics,
            "fvd_note": fvd_note(scores.num_videos, scores.num_reference_videos), "videos": rows}


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
              f"guidance {s['guidance_scale']:g}", ""]
    lines += ["| metric | model |" + (" base |" if base else ""), "|---|---|" + ("---|" if base else "")]
    for name in ("clip_score", "fvd", "num_videos"):
        row = f"| `eval/{name}` | {m[f'eval/{name}']:.4g} |"
        lines.append(row + (f" {m[f'eval/{name}_base']:.4g} |" if base else ""))
    lines += [f"| `eval/num_reference_videos` | {m['eval/num_reference_videos']:.0f} |" + (" |" if base else ""), ""]
    if results.get("fvd_note"):
        lines += [f"Note: {results['fvd_note']}", ""]
    lines += ["| # | prompt | seed | CLIP |" + (" CLIP (base) |" if base else "") + " video |",
              "|---|---|---|---|" + ("---|" if base else "") + "---|"]
    for r in results["videos"]:
        prompt = r["prompt"].replace("|", "\\|")
        cells = f"| {r['prompt_index']} | {prompt} | {r['seed']} | {r['clip_score']:.3f} |"
        if base:
            cells += f" {r['base_clip_score']:.3f} |" if r.get("base_clip_score") is not None else " |"
        lines.append(cells + f" `{r['path']}` |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results_markdown(results))


def first_frame_grid(columns: dict[str, list[Any]], path: Path, max_side: int = 256) -> Path:
    """A PNG grid of first frames: one row per prompt, one labelled column per model.

    ``columns`` maps a label to one (C, H, W) frame in [0, 1] per prompt.
    """
    from PIL import Image, ImageDraw

    labels = list(columns)
    rows = len(columns[labels[0]])
    _, h, w = columns[labels[0]][0].shape
    scale = min(1.0, max_side / max(h, w))
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    pad, header = 4, 16
    grid = Image.new("RGB", (len(labels) * (cw + pad) + pad, header + rows * (ch + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(labels):
        x = pad + c * (cw + pad)
        draw.text((x, 2), label, fill=(0, 0, 0))
        for r, frame in enumerate(columns[label]):
            img = Image.fromarray((frame.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy())
            if (cw, ch) != (w, h):
                img = img.resize((cw, ch), Image.BILINEAR)
            y = header + r * (ch + pad)
            grid.paste(img, (x, y))
            draw.text((x + 2, y + 1), str(r), fill=(255, 255, 255))
    grid.save(path)
    return path


def tap_first_frames(batches: Iterable[VideoBatch], first_seed: int, store: dict[int, Any]):
    """Pass batches through, keeping the first frame of each prompt's first-seed video."""
    for b in batches:
        for k, (i, s) in enumerate(zip(b.prompt_indices, b.seeds)):
            if s == first_seed:
                store[i] = b.frames[k, 0].clone()
        yield b
