"""``workbench data split SRC OUT`` (raw footage into clips inside shots, with quality scores), ``workbench data
caption ROOT`` (fill missing captions with a vision-language model), ``workbench data check ROOT`` (read every sample
and report problems) and ``workbench data sample OUT``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.data.decoder_pool import DEFAULT_TIMEOUT_S
from workbench.data.shots import DetectOptions


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="dataset tools: split raw footage, caption, check a dataset, write the "
                                 "sample dataset")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")

    p = sub.add_parser("sample", help="write a dataset of the shapes world (moving coloured shapes)",
                       description="Write clips of the shapes world (docs/shapes-world.md) with metadata.jsonl and a "
                       "dataset card: the bundled sample dataset by default, or any domain, size and length.")
    p.add_argument("out")
    p.add_argument("--num-clips", type=int, default=8)
    p.add_argument("--domain", choices=("all", "pretrain", "held_out"), default="all",
                   help="colours: every one (default), the miniature's pretraining ones, or the held-out yellow")
    p.add_argument("--frames", type=int, default=24, help="frames a clip (default 24)")
    p.add_argument("--fps", type=float, default=16.0, help="frame rate (default 16)")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--seed", type=int, default=0, help="scene variations (size, speed, offset) and their order")
    p.set_defaults(func=run_sample)

    p = sub.add_parser(
        "check", help="check every video and caption of a dataset against a recipe; writes report.json/.md",
        description="Read every manifest entry, decode every video and report what training would trip on. "
        "Exit status 0: clean or warnings only; 1: errors; 2: usage error.")
    p.add_argument("root", help="dataset folder (metadata.jsonl, metadata.csv or prompts.txt + videos.txt)")
    p.add_argument("--recipe", help="recipe YAML (or a bundled recipe's name): data.num_frames/fps/height/width/"
                   "buckets and model.model come from it, read as `workbench fit` reads it")
    p.add_argument("--num-frames", type=int, help="frames per sample (default: the recipe's, else the model family's "
                                                   "native clip: 49 for 2B and 5B, 81 for 1.5)")
    p.add_argument("--fps", type=float, help="frame rate frames are sampled at (default: the recipe's, else the "
                                             "family's: 8 for 2B and 5B, 16 for 1.5)")
    p.add_argument("--height", type=int, help="training height (default: the recipe's, else the family's: 480, 768)")
    p.add_argument("--width", type=int, help="training width (default: the recipe's, else the family's: 720, 1360)")
    p.add_argument("--model", help="model (local dir or hub id) whose tokenizer measures caption length")
    p.add_argument("--max-text-len", type=int, help="tokens the model reads (default: the model family's, 226)")
    p.add_argument("--out", default="data-check", help="folder for report.json and report.md (default ./data-check)")
    p.add_argument("--jobs", type=int, default=None, help="decoder processes (default min(4, CPUs))")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds before a decode counts as hung")
    p.set_defaults(func=run_check)

    p = sub.add_parser(
        "caption", help="caption a dataset's clips with a vision-language model (Qwen2.5-VL); fills empty captions",
        description="Fill the captions a dataset's manifest lacks with a Qwen2-VL / Qwen2.5-VL / Qwen3-VL captioner, "
        "each written to the manifest atomically as it finishes (a rerun goes on where a stopped one ended; the "
        "original is kept as NAME.orig); captions already there stay unless --overwrite. Each caption is measured "
        "with the CogVideoX T5 tokenizer against the family's 226 tokens. datasets/README.md, Captioning.")
    p.add_argument("root", help="dataset folder (metadata.jsonl, metadata.csv or prompts.txt + videos.txt)")
    p.add_argument("--captioner", default=None, help="hub id or local folder of the captioner (default "
                   "Qwen/Qwen2.5-VL-7B-Instruct)")
    p.add_argument("--prompt", default=None, help="the instruction (default: a dense one-paragraph description in "
                   "the style of CogVideoX's training captions)")
    p.add_argument("--prefix", default="", help="text put before every new caption (a trigger word)")
    p.add_argument("--overwrite", action="store_true", help="caption every clip, replacing the captions there")
    p.add_argument("--frames", type=int, default=8, help="frames shown per clip, evenly spaced (default 8)")
    p.add_argument("--max-side", type=int, default=448, help="frames downsized to this longer side (default 448)")
    p.add_argument("--batch-size", type=int, default=4, help="clips per generate call (default 4)")
    p.add_argument("--max-new-tokens", type=int, default=160, help="tokens a caption may have (default 160)")
    p.add_argument("--device", default="auto", help="cuda, cpu, cuda:1 ... (default: cuda when there is one)")
    p.add_argument("--dtype", default="auto", help="bf16, fp16 or fp32 (default: bf16 on a GPU, fp32 on the CPU)")
    p.add_argument("--model", help="CogVideoX model (local dir or hub id) whose T5 tokenizer measures the captions "
                   "(default THUDM/CogVideoX-2b)")
    p.add_argument("--max-text-len", type=int, help="tokens the model reads (default: the model family's, 226)")
    p.set_defaults(func=run_caption)

    p = sub.add_parser(
        "split", help="cut raw footage into training clips inside its shots, with quality scores",
        description="Find the shot boundaries of every video under SRC (PySceneDetect: hard cuts; gradual "
        "transitions: dissolves, fades), cut each shot into as many clips of the recipe's length as fit, score "
        "each clip and write OUT/metadata.jsonl (rows: source, start, end, caption, scores; no re-encoding unless "
        "--export-clips) and OUT/split.json (resume state: a rerun skips finished files). "
        "Exit status 0: done; 1: done, but some files were unreadable (listed); 2: usage error.")
    p.add_argument("src", help="footage folder (every video below it, or the rows of its manifest, with captions)")
    p.add_argument("out", help="output folder: metadata.jsonl, dropped.jsonl, split.json")
    p.add_argument("--recipe", help="recipe YAML (or bundled name): the clip (data.num_frames, data.fps) and model")
    p.add_argument("--family", help="model family whose native clip to cut (cogvideox-2b, cogvideox-5b, "
                   "cogvideox1.5-5b, ...; default: the recipe's, else cogvideox-2b)")
    p.add_argument("--num-frames", type=int, help="frames per clip, 4k+1 (default: the recipe's or family's: 49, 81)")
    p.add_argument("--fps", type=float, help="frame rate of a clip (default: the recipe's or family's: 8, 16)")
    g = p.add_argument_group("clips")
    g.add_argument("--margin", type=float, default=0.25, help="seconds kept away from every transition (0.25)")
    g.add_argument("--stride", type=float, help="seconds between clip starts in a shot (default: a clip's length, "
                   "no overlap)")
    g.add_argument("--max-clips-per-shot", type=int, help="at most this many clips a shot, spread over it")
    g.add_argument("--export-clips", action="store_true", help="also write each clip as a file (OUT/clips/, H.264); "
                   "rows get file_name")
    g.add_argument("--jobs", type=int, help="decoding processes (default: the CPUs)")
    g = p.add_argument_group("shot detection (PySceneDetect AdaptiveDetector + a histogram window for dissolves)")
    d = DetectOptions()
    g.add_argument("--cut-threshold", type=float, default=d.cut_threshold, help="AdaptiveDetector's adaptive "
                   f"threshold: a frame's change over its neighbours' ({d.cut_threshold:g})")
    g.add_argument("--min-content", type=float, default=d.min_content, help="least HSV change (0-255) that can "
                   f"be a cut ({d.min_content:g})")
    g.add_argument("--min-shot", type=float, default=d.min_shot, help=f"seconds between two cuts ({d.min_shot:g})")
    g.add_argument("--gradual-threshold", type=float, default=d.gradual_threshold, help="colour-histogram "
                   f"distance (0-1) across the window that marks a dissolve or fade ({d.gradual_threshold:g})")
    g.add_argument("--gradual-window", type=float, default=d.gradual_window, help="seconds the histogram is "
                   f"compared across ({d.gradual_window:g})")
    g.add_argument("--analysis-width", type=int, default=d.analysis_width, help="long side in px frames are "
                   f"scaled to for detection and scores ({d.analysis_width})")
    g = p.add_argument_group("quality (score every clip; these drop by threshold: default none)")
    g.add_argument("--min-motion", type=float, help="drop static clips: mean frame difference below this (0-255)")
    g.add_argument("--max-underexposed", type=float, help="drop clips whose fraction of black-crushed pixels is above")
    g.add_argument("--max-overexposed", type=float, help="drop clips whose fraction of clipped-white pixels is above")
    g.add_argument("--min-sharpness", type=float, help="drop blurry clips: variance of the Laplacian below this")
    g.add_argument("--max-border", type=float, help="drop clips whose black bars cover more than this fraction")
    g.add_argument("--drop-duplicates", action="store_true", help="drop near-duplicate clips (duplicate_of set)")
    g.add_argument("--duplicate-distance", type=int, default=6, help="dHash bits within which clips are "
                   "near-duplicates (6 of 64)")
    p.set_defaults(func=run_split)


def run_sample(ns: argparse.Namespace) -> int:
    from workbench.shapes.sample_dataset import make_sample_dataset

    print(make_sample_dataset(ns.out, num_clips=ns.num_clips, num_frames=ns.frames, fps=ns.fps, height=ns.height,
                              width=ns.width, domain=ns.domain, seed=ns.seed))
    return 0


def run_check(ns: argparse.Namespace) -> int:
    """0 clean or warnings only, 1 errors, 2 usage errors."""
    from workbench.common import UserError
    from workbench.data.check import check_dataset, safe_text
    from workbench.train.datamodule import data_family

    settings = {"num_frames": None, "fps": "auto", "height": None, "width": None, "buckets": None}
    model, family = ns.model, "auto"
    if ns.recipe:
        from workbench.train.cli import read_recipe

        recipe = read_recipe(ns.recipe)
        settings = {k: recipe["data"][k] for k in settings}
        model = model or recipe["model"]["model"]
        family = recipe["model"].get("family", "auto")
    for key in ("num_frames", "fps", "height", "width"):
        if getattr(ns, key) is not None:
            settings[key] = getattr(ns, key)
    root = Path(ns.root)
    if not root.is_dir():
        print(f"error: {root}: dataset folder not found", file=sys.stderr)
        return 2
    try:
        fam = data_family(model, family)  # the model's family: its native clip fills what is not set
        clip = fam.clip(settings["num_frames"], settings["height"], settings["width"], settings["fps"])
        settings.update(num_frames=clip.num_frames, height=clip.height, width=clip.width, fps=clip.fps)
        fam.check_data(clip.num_frames, clip.height, clip.width, settings["buckets"])
    except (ValueError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    max_text_len = ns.max_text_len or fam.text_len
    report = check_dataset(root, settings["num_frames"], settings["fps"], settings["height"], settings["width"],
                           tokenizer=model, max_text_len=max_text_len, buckets=settings["buckets"], jobs=ns.jobs,
                           timeout=ns.timeout)
    path = report.write(ns.out)
    print(safe_text(report.to_markdown(max_issues=30)))
    print(f"report: {path} (and report.md)")
    return 0 if report.ok else 1


def run_caption(ns: argparse.Namespace) -> int:
    """0 every clip captioned (or already was), 1 some could not be, 2 usage errors."""
    from workbench.curate.caption import DEFAULT_CAPTIONER, DEFAULT_PROMPT, caption_dataset

    summary, max_text_len = caption_dataset(
        ns.root, ns.captioner or DEFAULT_CAPTIONER, prompt=DEFAULT_PROMPT if ns.prompt is None else ns.prompt,
        prefix=ns.prefix, overwrite=ns.overwrite, frames=ns.frames, max_side=ns.max_side, batch_size=ns.batch_size,
        max_new_tokens=ns.max_new_tokens, device=ns.device, dtype=ns.dtype, model=ns.model,
        max_text_len=ns.max_text_len, warn=lambda line: print(line, file=sys.stderr))
    print("\n".join(summary.lines(max_text_len)))
    return 1 if summary.failed else 0


def _finite(name: str, value, low: float | None = None, high: float | None = None, strict: bool = False):
    import math

    from workbench.common import UserError

    if value is None:
        return None
    if not math.isfinite(value) or (low is not None and (value <= low if strict else value < low)) or (
            high is not None and value > high):
        bound = f"{'>' if strict else '>='} {low:g}" if low is not None else ""
        bound += (" and " if bound and high is not None else "") + (f"<= {high:g}" if high is not None else "")
        raise UserError(f"--{name.replace('_', '-')} {value}: must be a number {bound}")
    return value


def run_split(ns: argparse.Namespace) -> int:
    """0 done, 1 done with unreadable files (listed), 2 usage errors (UserError, one line)."""
    from workbench.common import UserError
    from workbench.curate.split import ClipPlan, SplitOptions, split_footage
    from workbench.train.datamodule import data_family

    model, family, num_frames, fps = None, ns.family or "auto", None, "auto"
    if ns.recipe:
        from workbench.train.cli import read_recipe

        recipe = read_recipe(ns.recipe)
        num_frames, fps = recipe["data"]["num_frames"], recipe["data"]["fps"]
        model = recipe["model"]["model"]
        family = ns.family or recipe["model"].get("family", "auto")
    num_frames = ns.num_frames if ns.num_frames is not None else num_frames
    fps = ns.fps if ns.fps is not None else fps
    try:
        try:
            fam = data_family(None if ns.family else model, family)
        except UserError:  # the recipe's model is not here: its family's rules by name (the clip is all split needs)
            fam = data_family(None, family)
        clip = fam.clip(num_frames, None, None, fps)
        fam.check_clip(clip.num_frames, None, None, where="--num-frames")
    except ValueError as e:
        raise UserError(str(e).splitlines()[0]) from None
    if not clip.fps:
        raise UserError("--fps: data split needs a clip frame rate (the recipe's data.fps is null); pass --fps")
    _finite("fps", clip.fps, 0, 1000, strict=True)
    plan = ClipPlan(clip.num_frames, float(clip.fps), margin=_finite("margin", ns.margin, 0, 3600),
                    stride=_finite("stride", ns.stride, 0, 86400, strict=True),
                    max_clips_per_shot=ns.max_clips_per_shot)
    if ns.max_clips_per_shot is not None and ns.max_clips_per_shot < 1:
        raise UserError(f"--max-clips-per-shot {ns.max_clips_per_shot}: must be at least 1")
    if ns.jobs is not None and ns.jobs < 1:
        raise UserError(f"--jobs {ns.jobs}: must be at least 1")
    if not 16 <= ns.analysis_width <= 4096:
        raise UserError(f"--analysis-width {ns.analysis_width}: must be between 16 and 4096 px")
    if not 0 <= ns.duplicate_distance <= 64:
        raise UserError(f"--duplicate-distance {ns.duplicate_distance}: must be between 0 and 64 bits")
    detect = DetectOptions(cut_threshold=_finite("cut_threshold", ns.cut_threshold, 0, strict=True),
                           min_content=_finite("min_content", ns.min_content, 0, 255),
                           min_shot=_finite("min_shot", ns.min_shot, 0, 3600),
                           gradual_threshold=_finite("gradual_threshold", ns.gradual_threshold, 0, 1, strict=True),
                           gradual_window=_finite("gradual_window", ns.gradual_window, 0, 60, strict=True),
                           analysis_width=ns.analysis_width)
    thresholds = {"min_motion": _finite("min_motion", ns.min_motion, 0, 255),
                  "max_underexposed": _finite("max_underexposed", ns.max_underexposed, 0, 1),
                  "max_overexposed": _finite("max_overexposed", ns.max_overexposed, 0, 1),
                  "min_sharpness": _finite("min_sharpness", ns.min_sharpness, 0),
                  "max_border": _finite("max_border", ns.max_border, 0, 1),
                  "drop_duplicates": bool(ns.drop_duplicates)}
    thresholds = {k: v for k, v in thresholds.items() if v not in (None, False)}
    options = SplitOptions(plan, detect, thresholds, ns.duplicate_distance, ns.export_clips, ns.jobs)
    result = split_footage(ns.src, ns.out, options, warn=lambda line: print(line, file=sys.stderr))
    print(result.summary())
    return 1 if result.failed else 0
