"""``workbench prepare``'s job: encode a dataset's latents and prompt embeddings once, into a cache.

The VAE and T5 are loaded here, on ``device``, and freed when the function returns; what a clip and a caption
are encoded as is the model family's (``ModelFamily.encode_clips``/``encode_prompts``, the same code training
from raw video runs); the cache's format and bookkeeping are workbench.data.cache's.
"""

from __future__ import annotations

from pathlib import Path

from workbench.common import torch_dtype
from workbench.data.cache import cache_key, encode_entries
from workbench.data.dataset import load_image
from workbench.data.validate import nearest_bucket
from workbench.data.video import load_clip, probe


def prepare_cache(model: str, root: str | Path, cache_dir: str | Path, num_frames: int, height: int, width: int,
                  fps: float | None, device: str | None = None, dtype: str = "bf16", rank: int = 0,
                  world_size: int = 1, vae_tiling: bool = False, progress: bool = True, buckets=None) -> dict:
    """Encode every sample of ``root`` missing from ``cache_dir``; returns the cache index.

    With ``buckets`` ([[height, width], ...]) each clip is encoded at the bucket nearest its aspect ratio (as
    training from raw videos resizes it: workbench.data.validate.nearest_bucket), and the cache records it.
    """
    import torch
    from diffusers import AutoencoderKLCogVideoX
    from transformers import AutoTokenizer, T5EncoderModel

    from workbench.model.families import family_of_model
    from workbench.model.families.image_to_video import clip_generators
    from workbench.model.loading import check_model_source, freeze

    check_model_source(model)
    family = family_of_model(model)  # its rules, and the encoders training uses too
    family.check_data(num_frames, height, width, buckets, where="prepare")
    key = cache_key(model, num_frames, height, width, fps, buckets)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype_ = torch_dtype(dtype)
    vae = AutoencoderKLCogVideoX.from_pretrained(model, subfolder="vae", use_safetensors=True, torch_dtype=dtype_)
    text_encoder = T5EncoderModel.from_pretrained(model, subfolder="text_encoder", use_safetensors=True,
                                                  torch_dtype=dtype_)
    tokenizer = AutoTokenizer.from_pretrained(model, subfolder="tokenizer")
    for m in (vae, text_encoder):
        freeze(m)
        m.to(device)
    vae.enable_slicing()
    if vae_tiling:
        vae.enable_tiling()

    def embed(caption: str) -> torch.Tensor:
        return family.encode_prompts(tokenizer, text_encoder, [caption])[0]

    @torch.no_grad()
    def encode(entry) -> dict:
        if entry.caption is None:
            raise ValueError("missing caption")
        path = entry.path(Path(root))
        size = (height, width)
        if key.buckets:
            info = probe(path)
            size = key.buckets[nearest_bucket(info.height, info.width, list(key.buckets))]
        video = load_clip(path, num_frames, size[0], size[1], fps, entry.start, entry.end)
        # an image-to-video family noises the clip's image once, seeded by the sample's key (per_clip)
        generators = clip_generators([entry.key]) if family.image_conditioned else None
        image = None
        if family.image_conditioned and entry.image is not None:  # else the clip's first frame
            image = load_image(entry, Path(root), size[0], size[1]).unsqueeze(0).to(device, dtype_)
        tensors = family.encode_clips(vae, video.unsqueeze(0).to(device, dtype_), images=image, generators=generators)
        return {**{k: v[0] for k, v in tensors.items()}, "prompt_embeds": embed(entry.caption), "size": size}

    return encode_entries(cache_dir, root, key, encode, lambda: embed(""), rank=rank, world_size=world_size,
                          progress=progress)
