"""``workbench generate``: render one video from an export with the stock ``CogVideoXPipeline``.

Works on anything diffusers loads: a merged export directory (or hub repo), or a base model plus a
LoRA (``pytorch_lora_weights.safetensors`` or the export directory holding it). No workbench
code runs inside the pipeline, so what this renders is what a diffusers user gets.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DTYPES = ("fp32", "bf16", "fp16")


class GenerateError(Exception):
    """A problem the user can fix (missing model, bad size); printed without a traceback."""


def load_pipeline(model: str, lora: str | None = None, device: str | None = None, dtype: str | None = None,
                  compile: bool = False):
    """Stock ``CogVideoXPipeline.from_pretrained(model)`` (+ ``load_lora_weights(lora)``) on ``device``.

    ``compile``: ``torch.compile`` each transformer block (regional; the first denoising step pays
    the compilation; docs/performance.md measures when it pays off)."""
    import torch
    from diffusers import CogVideoXPipeline

    from workbench.model.loading import check_model_source

    try:
        check_model_source(model)
    except FileNotFoundError as e:
        raise GenerateError(str(e)) from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("bf16" if device.startswith("cuda") else "fp32")
    kwargs = {} if dtype == "fp32" else {"torch_dtype": {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]}
    try:
        pipe = CogVideoXPipeline.from_pretrained(model, use_safetensors=True, **kwargs)
    except OSError as e:
        raise GenerateError(f"cannot load {model}: {str(e).splitlines()[0]}") from None
    if lora is not None:
        path = Path(lora)
        if path.is_file():
            pipe.load_lora_weights(str(path.parent), weight_name=path.name)
        elif path.is_dir():
            if not (path / "pytorch_lora_weights.safetensors").is_file():
                raise GenerateError(f"{lora}: no pytorch_lora_weights.safetensors in this directory")
            pipe.load_lora_weights(str(path))
        elif path.exists() or lora.startswith((".", "/", "~")):
            raise GenerateError(f"{lora}: no such LoRA file or directory")
        else:
            pipe.load_lora_weights(lora)  # a hub repo id
    pipe.to(device)
    if compile:
        from workbench.model.speed import compile_blocks

        compile_blocks(pipe.transformer)
    return pipe


def generate_video(model: str, prompt: str, out: str | os.PathLike, *, lora: str | None = None,
                   negative_prompt: str | None = None, steps: int = 50, guidance: float = 6.0,
                   frames: int | None = None, height: int | None = None, width: int | None = None,
                   seed: int = 42, fps: int = 8, lora_scale: float = 1.0, device: str | None = None,
                   dtype: str | None = None, progress: bool = True, compile: bool = False) -> Path:
    """Render ``prompt`` to ``out`` (mp4). Frames/size default to the model's training size
    (transformer config: 49 frames at 480x720 for CogVideoX-2b)."""
    import torch
    from diffusers.utils import export_to_video

    from workbench.data.video import check_frame_count, check_resolution

    try:  # explicit sizes are checked before loading; the model's own defaults are valid
        if frames is not None:
            check_frame_count(frames)
        if height is not None or width is not None:
            check_resolution(height or 16, width or 16)
    except ValueError as e:
        raise GenerateError(str(e)) from None
    pipe = load_pipeline(model, lora, device, dtype, compile=compile)
    cfg = pipe.transformer.config
    frames = frames or cfg.sample_frames
    height = height or cfg.sample_height * pipe.vae_scale_factor_spatial
    width = width or cfg.sample_width * pipe.vae_scale_factor_spatial
    pipe.set_progress_bar_config(disable=not progress)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    video = pipe(prompt=prompt, negative_prompt=negative_prompt, num_inference_steps=steps,
                 guidance_scale=guidance, num_frames=frames, height=height, width=width, generator=generator,
                 max_sequence_length=cfg.max_text_seq_length, output_type="np",
                 attention_kwargs={"scale": lora_scale} if lora is not None else None).frames[0]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix or '.mp4'}")
    try:
        export_to_video(list(video), str(tmp), fps=fps)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def cmd_generate(ns: argparse.Namespace) -> int:
    try:
        out = generate_video(ns.model, ns.prompt, ns.out, lora=ns.lora, negative_prompt=ns.negative_prompt,
                             steps=ns.steps, guidance=ns.guidance, frames=ns.frames, height=ns.height,
                             width=ns.width, seed=ns.seed, fps=ns.fps, lora_scale=ns.lora_scale,
                             device=ns.device, dtype=ns.dtype, compile=ns.compile)
    except GenerateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``workbench generate`` on the top-level subparsers."""
    p = subparsers.add_parser(
        "generate", help="render a video from an export (merged dir, or base + --lora) with stock diffusers",
        description="Render one video with the stock CogVideoXPipeline: --model is a merged export, a base "
                    "model directory or a hub id; --lora adds a LoRA (file or export directory).")
    p.add_argument("--model", required=True, help="merged export directory, base model directory or hub id")
    p.add_argument("--prompt", required=True)
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--lora", help="pytorch_lora_weights.safetensors, or a directory (export) holding it")
    p.add_argument("--lora-scale", type=float, default=1.0, help="LoRA strength (default 1.0)")
    p.add_argument("--negative-prompt")
    p.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    p.add_argument("--guidance", type=float, default=6.0, help="classifier-free guidance scale (default 6.0)")
    p.add_argument("--frames", type=int, help="4k+1 frames (default: the model's, 49 for CogVideoX-2b)")
    p.add_argument("--height", type=int, help="multiple of 16 (default: the model's, 480)")
    p.add_argument("--width", type=int, help="multiple of 16 (default: the model's, 720)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--dtype", choices=DTYPES, help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer blocks (pays off over many steps or videos; "
                        "see docs/performance.md)")
    p.set_defaults(func=cmd_generate)
    return p
