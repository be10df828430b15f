"""The miniature CogVideoX of the shapes world: real diffusers classes at small widths, in diffusers layout.

Made in three steps (``workbench shapes make``, docs/shapes-world.md):

1. ``init_miniature``: the trained VAE (workbench.shapes.vae), a T5-style tokenizer over the world's
   words, a small random T5 encoder (frozen forever, as T5-XXL is in CogVideoX), a randomly initialised
   ``CogVideoXTransformer3DModel`` and CogVideoX-2B's scheduler config, saved as a pipeline directory;
2. ``workbench fit --config recipes/shapes-pretrain.yaml`` trains the transformer from scratch with the
   workbench's own objective (``mode: full``) on the pretraining domain;
3. ``finalize_miniature``: the trained transformer from the run's checkpoint, everything saved in
   safetensors (transformer and VAE in fp16, T5 in fp32) with its model card.

The result loads with stock ``CogVideoXPipeline.from_pretrained``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from workbench.shapes.world import COLOURS, DIRECTIONS, SHAPES

SHIPPED = Path(__file__).resolve().parent / "weights"  # what ships with the package (<= 20 MB in all)
MINIATURE_DIR = SHIPPED / "miniature"  # the pretrained pipeline, diffusers layout
DETECTOR_PATH = SHIPPED / "metric-nets" / "shapes-i3d.pt"  # FVD features, StyleGAN-V's I3D calling convention
CLIP_DIR = SHIPPED / "metric-nets" / "shapes-clip"  # the CLIP slot: a save_pretrained CLIPModel
NUM_FRAMES, HEIGHT, WIDTH, FPS = 17, 64, 64, 8
MAX_TEXT_LEN = 24

WORDS = tuple(dict.fromkeys(
    "a an the".split() + list(COLOURS) + list(SHAPES) + " ".join(DIRECTIONS).split()
    + "moving moves from to on of in with and dark light black background small large slowly quickly".split()))

TRANSFORMER = dict(num_attention_heads=4, attention_head_dim=32, in_channels=8, out_channels=8, time_embed_dim=128,
                   text_embed_dim=64, num_layers=6, sample_width=WIDTH // 8, sample_height=HEIGHT // 8,
                   sample_frames=NUM_FRAMES, patch_size=2, temporal_compression_ratio=4,
                   max_text_seq_length=MAX_TEXT_LEN)
TEXT_ENCODER = dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)


def init_miniature(out_dir: str | os.PathLike, vae_dir: str | os.PathLike, seed: int = 0) -> Path:
    """The untrained miniature: trained VAE + tokenizer + random T5 and transformer + 2B scheduler config."""
    import torch
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from workbench.model.tiny import COGVIDEOX_2B_SCHEDULER, t5_style_tokenizer

    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = t5_style_tokenizer(Path(tmp), WORDS, MAX_TEXT_LEN)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               decoder_start_token_id=tokenizer.pad_token_id, **TEXT_ENCODER))
        transformer = CogVideoXTransformer3DModel(**TRANSFORMER)
    vae = AutoencoderKLCogVideoX.from_pretrained(vae_dir, use_safetensors=True)
    pipe = CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder.eval(), vae=vae, transformer=transformer,
                             scheduler=CogVideoXDDIMScheduler(**COGVIDEOX_2B_SCHEDULER))
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def finalize_miniature(init_dir: str | os.PathLike, checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                       card: str) -> Path:
    """The trained miniature: the checkpoint's transformer in the init pipeline, saved compactly, with ``card``.

    Written into a sibling temp directory and renamed, so an interrupted build never leaves a half directory.
    """
    import torch

    from workbench.model.checkpoint import load_finetuned

    out = Path(out_dir)
    c = load_finetuned(checkpoint, base_model=str(init_dir))
    pipe = c.pipeline()
    pipe.transformer.to(torch.float16)
    pipe.vae.to(torch.float16)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "README.md").write_text(card)
    if out.exists():
        shutil.rmtree(out)
    tmp.chmod(0o755)
    os.replace(tmp, out)
    return out


def directory_megabytes(path: str | os.PathLike) -> float:
    """Size of every file under ``path``, in MB (10^6 bytes)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6
