"""``workbench generate``: render one video with the family's stock pipeline (``CogVideoXPipeline``, or
``CogVideoXImageToVideoPipeline`` with ``--image``) from an export, or base + LoRA."""

from __future__ import annotations

import argparse

from workbench.common import DTYPE_NAMES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="render a video from an export (merged dir, or base + --lora) with stock diffusers",
        description="Render one video with the model family's stock pipeline (CogVideoXPipeline; "
                    "CogVideoXImageToVideoPipeline with --image for the image-to-video models): --model is a merged export, a base "
                    "model directory or a hub id; --lora adds a LoRA (file or export directory).")
    p.add_argument("--model", required=True, help="merged export directory, base model directory or hub id")
    p.add_argument("--prompt", required=True)
    p.add_argument("--image", help="image-to-video models: the first frame to animate (PNG/JPEG; framed to the clip as training frames it: cover-resize, centre crop)")
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
    p.add_argument("--fps", type=float, default=None, help="frames per second of the mp4 (default: the model family's, 8 or 16)")
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--dtype", choices=sorted(DTYPE_NAMES), help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer blocks (pays off over many steps or videos; "
                        "see docs/performance.md)")
    p.add_argument("--attention", choices=("sdpa", "flash4", "auto"), default="sdpa",
                   help="attention kernel: sdpa (default), flash4 (FlashAttention-4, Hopper GPUs, pip install "
                        "\".[hopper]\") or auto (flash4 where it runs, else sdpa)")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from workbench.model.pipeline import generate_video

    out = generate_video(ns.model, ns.prompt, ns.out, lora=ns.lora, negative_prompt=ns.negative_prompt,
                         steps=ns.steps, guidance=ns.guidance, frames=ns.frames, height=ns.height,
                         width=ns.width, seed=ns.seed, fps=ns.fps, lora_scale=ns.lora_scale,
                         device=ns.device, dtype=ns.dtype, compile=ns.compile, attention=ns.attention,
                         image=ns.image)
    print(out)
    return 0
