"""``workbench data check ROOT`` (read every sample and report problems), ``workbench data caption ROOT`` (fill
missing captions with a vision-language model) and ``workbench data sample OUT``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.data.decoder_pool import DEFAULT_TIMEOUT_S


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="dataset tools: check a dataset, write the sample dataset")
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
