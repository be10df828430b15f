"""``workbench prepare``: encode a dataset's latents and prompt embeddings once, into a cache."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def cache_key(model: str, num_frames: int, height: int, width: int, fps: float | None):
    """The CacheKey a run with these settings needs (reads configs only, no weights)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import AutoConfig

    from workbench.data.cache import CacheKey, config_sha256
    from workbench.model.loading import absolute_if_local

    model = absolute_if_local(model)  # as the training module records it
    vae_cfg = AutoencoderKLCogVideoX.load_config(model, subfolder="vae")
    text_cfg = AutoConfig.from_pretrained(model, subfolder="text_encoder")
    max_len = CogVideoXTransformer3DModel.load_config(model, subfolder="transformer")["max_text_seq_length"]
    return CacheKey(model=str(model), vae_config_sha256=config_sha256(vae_cfg),
                    text_encoder_config_sha256=config_sha256(text_cfg), num_frames=num_frames,
                    height=height, width=width, fps=fps, max_text_len=max_len)


def prepare(model: str, root: str | Path, cache_dir: str | Path, num_frames: int, height: int, width: int,
            fps: float | None, device: str | None = None, dtype: str = "bf16", rank: int = 0, world_size: int = 1,
            vae_tiling: bool = False, progress: bool = True) -> dict:
    """Encode every sample of ``root`` missing from ``cache_dir``; returns the cache index."""
    import torch
    from diffusers import AutoencoderKLCogVideoX
    from transformers import AutoTokenizer, T5EncoderModel

    from workbench.data.cache import encode_entries
    from workbench.data.video import check_frame_count, check_resolution, load_clip
    from workbench.model.loading import check_model_source, freeze

    check_frame_count(num_frames)
    check_resolution(height, width)
    check_model_source(model)
    key = cache_key(model, num_frames, height, width, fps)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch_dtype = getattr(torch, DTYPES[dtype])
    vae = AutoencoderKLCogVideoX.from_pretrained(model, subfolder="vae", use_safetensors=True, torch_dtype=torch_dtype)
    text_encoder = T5EncoderModel.from_pretrained(model, subfolder="text_encoder", use_safetensors=True,
                                                  torch_dtype=torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(model, subfolder="tokenizer")
    for m in (vae, text_encoder):
        freeze(m)
        m.to(device)
    vae.enable_slicing()
    if vae_tiling:
        vae.enable_tiling()

    @torch.no_grad()
    def embed(caption: str) -> torch.Tensor:
        # Same tokenization as training and CogVideoXPipeline: pad to max_text_seq_length, no mask.
        ids = tokenizer([caption], padding="max_length", max_length=key.max_text_len, truncation=True,
                        add_special_tokens=True, return_tensors="pt").input_ids.to(device)
        return text_encoder(ids)[0][0]

    @torch.no_grad()
    def encode(entry) -> dict:
        if entry.caption is None:
            raise ValueError("missing caption")
        video = load_clip(entry.path(Path(root)), num_frames, height, width, fps)
        dist = vae.encode(video.unsqueeze(0).to(device, torch_dtype)).latent_dist
        return {"latent_dist": dist.parameters[0], "prompt_embeds": embed(entry.caption)}

    return encode_entries(cache_dir, root, key, encode, lambda: embed(""), rank=rank, world_size=world_size,
                          progress=progress)


def _recipe_values(path: str) -> dict:
    import yaml

    from workbench.recipes import recipe_path

    recipe = yaml.safe_load(recipe_path(path).read_text())
    data, model = recipe.get("data", {}), recipe.get("model", {})
    return {"model": model.get("model"), "root": data.get("root"), "cache": data.get("cache"),
            "num_frames": data.get("num_frames"), "height": data.get("height"), "width": data.get("width"),
            "fps": data.get("fps"), "dtype": model.get("frozen_dtype"), "vae_tiling": model.get("vae_tiling")}


def cmd_prepare(ns: argparse.Namespace) -> int:
    values = _recipe_values(ns.config) if ns.config else {}
    for k in ("model", "root", "cache", "num_frames", "height", "width", "fps", "dtype"):
        if getattr(ns, k) is not None:
            values[k] = getattr(ns, k)
    missing = [k for k in ("model", "root", "cache", "num_frames", "height", "width") if values.get(k) is None]
    if missing:
        print(f"error: missing {', '.join('--' + m.replace('_', '-') for m in missing)} (or --config RECIPE)",
              file=sys.stderr)
        return 2
    if values["cache"] == "auto":
        from workbench.data.cache import auto_cache_dir

        values["cache"] = str(auto_cache_dir(values["root"], values["model"], int(values["num_frames"]),
                                             int(values["height"]), int(values["width"]), values.get("fps")))
    rank = ns.shard_index if ns.shard_index is not None else int(os.environ.get("RANK", 0))
    world = ns.num_shards if ns.num_shards is not None else int(os.environ.get("WORLD_SIZE", 1))
    device = ns.device
    if device is None and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    from workbench.data.cache import CacheError
    from workbench.data.manifest import ManifestError

    try:
        index = prepare(values["model"], values["root"], values["cache"], int(values["num_frames"]),
                        int(values["height"]), int(values["width"]), values.get("fps"), device=device,
                        dtype=values.get("dtype") or "bf16", rank=rank, world_size=world,
                        vae_tiling=bool(values.get("vae_tiling")))
    except (CacheError, ManifestError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    done, total = len(index.get("entries", [])), index.get("num_entries", "?")
    print(f"cache {values['cache']}: {done}/{total} samples" + ("" if index.get("complete") else " (incomplete)"))
    for name, reason in index.get("failed", {}).items():
        print(f"  failed: {name}: {reason}")
    return 0 if index.get("complete") else 1


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare", help="encode latents and prompt embeddings once, into a resumable cache",
        description="Encode every clip (VAE latent distribution) and caption (T5 embedding) of a dataset "
        "into a cache that `workbench fit` reads with data.cache=DIR (no VAE or T5 resident while training). "
        "Re-running finishes only what is missing. Several processes (or `torchrun --nproc-per-node N "
        "-m workbench.cli prepare ...`) split the work.")
    p.add_argument("--config", help="recipe YAML to read model/data settings from")
    p.add_argument("--model", help="hub id or local diffusers directory")
    p.add_argument("--root", "--data-root", dest="root", help="dataset folder")
    p.add_argument("--cache", help="cache directory to write ('auto': <root>/.workbench-cache/<model>-<F>x<H>x<W>-<fps>fps, "
                   "what data.cache: auto reads)")
    p.add_argument("--num-frames", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--fps", type=float)
    p.add_argument("--dtype", choices=sorted(DTYPES), help="dtype of the VAE/T5 while encoding (default bf16)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--num-shards", type=int, help="split the work over this many processes")
    p.add_argument("--shard-index", type=int, help="this process's part, 0-based")
    p.set_defaults(func=cmd_prepare)
