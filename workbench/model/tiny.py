"""Build a tiny random CogVideoX of each family and save it in the standard diffusers layout.

Tests load them back through the same ``from_pretrained`` path as the real models. Each keeps its family's
architecture at toy widths and changes from the 2B one only what the released configs change
(``FAMILY_CHANGES``): 5B adds rotary positions, VAE scaling 0.7 and the scheduler's snr_shift_scale 1.0;
1.5-5B adds ``patch_size_t=2``, ``patch_bias=False`` and the VAE's
``invert_scale_latents``; the image-to-video ones double the transformer's input channels (5B-I2V adds learned
positions, 1.5-I2V the ofs embedding) and are saved as ``CogVideoXImageToVideoPipeline``. The tokenizer is a T5-style Unigram model built locally (no hub access needed).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import diffusers
import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    CogVideoXDDIMScheduler,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
)
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from workbench.model.families import family_class

# The scheduler config CogVideoX-2b ships (scheduler/scheduler_config.json on the hub).
COGVIDEOX_2B_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    set_alpha_to_one=True,
    snr_shift_scale=3.0,
    steps_offset=0,
    timestep_spacing="trailing",
)

TINY_MAX_TEXT_LEN = 32

_WORDS = (
    "a an the red green blue yellow white magenta cyan orange circle square triangle bar dot ball "
    "box moves moving slides sliding left right up down to from of on in with and background black "
    "gray dark light slowly quickly across frame bouncing rotating small large video clip scene "
    "camera shot close wide person car tree sky water day night"
).split()


def t5_style_tokenizer(out_dir: Path, words: tuple[str, ...] | list[str] = _WORDS,
                       max_length: int = TINY_MAX_TEXT_LEN) -> T5Tokenizer:
    """A T5-style (Metaspace + Unigram) tokenizer over a small vocabulary (``words``), saved to ``out_dir``.

    Whole words get high scores and single characters low ones, so known words are one token and
    anything else still tokenizes (character fallback), as with T5's sentencepiece model.
    """
    words = list(dict.fromkeys(words))
    chars = sorted(set("".join(words)) | set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,'-!?"))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    vocab += [(f"\u2581{w}", -1.0) for w in words]
    vocab += [(c, -8.0) for c in chars] + [(f"\u2581{c}", -7.0) for c in chars if c not in words]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer = T5Tokenizer(
        tokenizer_object=tok,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=max_length,
    )
    tokenizer.save_pretrained(out_dir)
    return tokenizer


# What each family's released configs change against CogVideoX-2b's (diffusers
# scripts/convert_cogvideox_to_diffusers.py and the hub configs): transformer, VAE, scheduler keys.
FAMILY_CHANGES = {
    "cogvideox-2b": ({}, {}, {}),
    "cogvideox-5b": ({"use_rotary_positional_embeddings": True}, {"scaling_factor": 0.7}, {"snr_shift_scale": 1.0}),
    # 1.5's released sample_height/width bound a larger rotary canvas than its training clip: 16 x 16 here
    "cogvideox1.5-5b": ({"use_rotary_positional_embeddings": True, "patch_size_t": 2, "patch_bias": False,
                         "sample_height": 16, "sample_width": 16},
                        {"scaling_factor": 0.7, "invert_scale_latents": True}, {"snr_shift_scale": 1.0}),
}
# The image-to-video models change their text-to-video parent's configs by: twice the latent channels in
# (in_channels 32 for out_channels 16), 5B-I2V's learned positional embeddings for its sample size, and
# 1.5-I2V's ofs embedding (ofs_embed_dim = time_embed_dim, 512 released).
_I2V_IN = {"in_channels": 8}  # the tiny models' 4 latent channels, twice
FAMILY_CHANGES["cogvideox-5b-i2v"] = ({**FAMILY_CHANGES["cogvideox-5b"][0], **_I2V_IN,
                                       "use_learned_positional_embeddings": True},
                                      *FAMILY_CHANGES["cogvideox-5b"][1:])
FAMILY_CHANGES["cogvideox1.5-5b-i2v"] = ({**FAMILY_CHANGES["cogvideox1.5-5b"][0], **_I2V_IN, "ofs_embed_dim": 32},
                                         *FAMILY_CHANGES["cogvideox1.5-5b"][1:])
# Every family ships CogVideoXDDIMScheduler for sampling (scripts/convert_cogvideox_to_diffusers.py; the 5B's
# snr_shift_scale is 1.0); training uses CogVideoXDPMScheduler from the same config (workbench.model.loading).


def build_tiny_pipeline(seed: int = 0, family: str = "cogvideox-2b") -> CogVideoXPipeline:
    """A randomly initialised CogVideoX pipeline of ``family``, small enough to train on a CPU in seconds."""
    if family not in FAMILY_CHANGES:
        raise ValueError(f"family={family!r}: choose one of {', '.join(FAMILY_CHANGES)}")
    transformer_changes, vae_changes, scheduler_changes = FAMILY_CHANGES[family]
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = t5_style_tokenizer(Path(tmp))
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    )
    transformer = CogVideoXTransformer3DModel(**{
        **dict(num_attention_heads=4, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=32,
               text_embed_dim=32, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
               temporal_compression_ratio=4, max_text_seq_length=TINY_MAX_TEXT_LEN),
        **transformer_changes,
    })
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
        sample_height=64,
        sample_width=64,
        **vae_changes,
    )
    scheduler = CogVideoXDDIMScheduler(**{**COGVIDEOX_2B_SCHEDULER, **scheduler_changes})
    pipeline_class = getattr(diffusers, family_class(family).pipeline_class)  # the family's own pipeline
    return pipeline_class(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


def is_tiny_model_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a complete saved pipeline (written last, see save_tiny_model)."""
    return (Path(path) / "model_index.json").is_file() and (Path(path) / ".complete").is_file()


def save_tiny_model(out_dir: str | os.PathLike, seed: int = 0, family: str = "cogvideox-2b") -> Path:
    """Build the tiny pipeline of ``family`` and save it to ``out_dir`` (diffusers layout, safetensors).

    Written into a sibling temp directory and renamed, so an interrupted build never leaves a
    directory that looks complete.
    """
    out = Path(out_dir)
    if is_tiny_model_dir(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    build_tiny_pipeline(seed, family).save_pretrained(tmp, safe_serialization=True)
    (tmp / ".complete").write_text(json.dumps({"builder": "workbench.model.tiny", "seed": seed, "family": family}))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.chmod(0o755)  # mkdtemp makes it private; a saved model is readable like any other directory
    os.replace(tmp, out)
    return out
