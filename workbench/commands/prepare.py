"""``workbench prepare``: encode a dataset's latents and prompt embeddings once, into a resumable cache."""

from __future__ import annotations

import argparse
import os
import sys

from workbench.common import DTYPE_NAMES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare", help="encode latents and prompt embeddings once, into a resumable cache",
        description="Encode every clip (VAE latent distribution) and caption (T5 embedding) of a dataset "
        "into a cache that `workbench fit` reads with data.cache=DIR (no VAE or T5 resident while training). "
        "Re-running finishes only what is missing. Several processes (or `torchrun --nproc-per-node N "
        "-m workbench.cli prepare ...`) split the work.")
    p.add_argument("--config", help="recipe YAML (or bundled recipe name) to read model/data settings from, "
                   "as `workbench fit` reads it")
    p.add_argument("--model", help="hub id or local diffusers directory")
    p.add_argument("--root", "--data-root", dest="root", help="dataset folder")
    p.add_argument("--cache", help="cache directory to write ('auto': <root>/.workbench-cache/<model>-<F>x<H>x<W>-"
                   "<fps>fps, what data.cache: auto reads)")
    p.add_argument("--num-frames", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--fps", type=float)
    p.add_argument("--buckets", type=_buckets, help="aspect-ratio buckets, e.g. 480x720,720x480,480x480: each clip is "
                   "encoded at the one nearest its aspect ratio (or data.buckets of --config)")
    p.add_argument("--dtype", choices=sorted(DTYPE_NAMES), help="dtype of the VAE/T5 while encoding (default: the recipe's frozen_dtype, else bf16 on a GPU, "
                   "fp32 on a CPU)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--num-shards", type=int, help="split the work over this many processes")
    p.add_argument("--shard-index", type=int, help="this process's part, 0-based")
    p.set_defaults(func=run)


def _recipe_values(path: str) -> dict:
    from workbench.train.cli import read_recipe

    recipe = read_recipe(path)
    # any group of a recipe may be absent or null (a recipe without a speed: block has model.speed None)
    data, model = _group(recipe, "data"), _group(recipe, "model")
    return {"model": model.get("model"), "family": model.get("family"), "root": data.get("root"),
            "cache": data.get("cache"), "num_frames": data.get("num_frames"), "height": data.get("height"), "width": data.get("width"),
            "fps": data.get("fps", "auto"), "dtype": model.get("frozen_dtype"),
            "vae_tiling": _group(model, "speed").get("vae_tiling"), "buckets": data.get("buckets")}


def _group(values: dict, name: str) -> dict:
    """``values[name]`` as a dict ({} when absent or null)."""
    group = values.get(name)
    return group if isinstance(group, dict) else {}


def _default_dtype(device: str | None) -> str:
    """bf16 on a GPU (half the memory, the 2B recipes' frozen dtype), fp32 on a CPU (bf16 is slow there)."""
    import torch

    on_gpu = device.startswith("cuda") if device else torch.cuda.is_available()
    return "bf16" if on_gpu else "fp32"


def _buckets(text: str) -> list[list[int]]:
    try:
        return [[int(v) for v in item.lower().split("x")] for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: buckets as HEIGHTxWIDTH,HEIGHTxWIDTH (e.g. 480x720,720x480)") \
            from None


def run(ns: argparse.Namespace) -> int:
    values = _recipe_values(ns.config) if ns.config else {}
    for k in ("model", "root", "cache", "num_frames", "height", "width", "fps", "dtype", "buckets"):
        if getattr(ns, k) is not None:
            values[k] = getattr(ns, k)
    family = None
    if values.get("model") is not None:
        from workbench.common import UserError
        from workbench.train.datamodule import data_family

        try:  # the model's family, read once here and passed on; what the recipe or the command line leaves
            # out is its native clip
            family = data_family(values["model"], values.get("family") or "auto")
            clip = family.clip(values.get("num_frames"), values.get("height"), values.get("width"),
                               values.get("fps", "auto"))
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        values.update(num_frames=clip.num_frames, height=clip.height, width=clip.width, fps=clip.fps)
    missing = [k for k in ("model", "root", "cache", "num_frames", "height", "width") if values.get(k) is None]
    if missing:
        print(f"error: missing {', '.join('--' + m.replace('_', '-') for m in missing)} (or --config RECIPE)",
              file=sys.stderr)
        return 2
    from workbench.data.cache import auto_cache_dir
    from workbench.data.prepare import prepare_cache

    if values["cache"] == "auto":
        values["cache"] = str(auto_cache_dir(values["root"], values["model"], values["num_frames"],
                                             values["height"], values["width"], values.get("fps"),
                                             values.get("buckets")))
    rank = ns.shard_index if ns.shard_index is not None else int(os.environ.get("RANK", 0))
    world = ns.num_shards if ns.num_shards is not None else int(os.environ.get("WORLD_SIZE", 1))
    device = ns.device
    if device is None and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    try:
        index = prepare_cache(values["model"], values["root"], values["cache"], int(values["num_frames"]),
                              int(values["height"]), int(values["width"]), values.get("fps"), device=device,
                              dtype=values.get("dtype") or _default_dtype(device), rank=rank, world_size=world,
                              vae_tiling=bool(values.get("vae_tiling")), buckets=values.get("buckets"),
                              family=family)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    done, total = len(index.get("entries", [])), index.get("num_entries", "?")
    print(f"cache {values['cache']}: {done}/{total} samples" + ("" if index.get("complete") else " (incomplete)"))
    for name, reason in index.get("failed", {}).items():
        print(f"  failed: {name}: {reason}")
    return 0 if index.get("complete") else 1
