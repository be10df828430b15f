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
                  world_size: int = 1, vae_tiling: bool = False, progress: bool = True, buckets=None, *,
                  family) -> dict:
    """Encode every sample of ``root`` missing from ``cache_dir``; returns the cache index.

    ``family``: ``model``'s family as the command read it where it started (its data rules, its encoders'
    use): ``workbench prepare`` reads it once, ``workbench fit`` hands its data module's on.

    With ``buckets`` ([[height, width], ...]) each clip is encoded at the bucket nearest its aspect ratio (as
    training from raw videos resizes it: workbench.data.validate.nearest_bucket), and the cache records it.
    """
    import torch

    from workbench.model.loading import check_model_source, freeze, load_components

    check_model_source(model)
    family.check_data(num_frames, height, width, buckets, where="prepare")
    key = cache_key(model, num_frames, height, width, fps, buckets, family=family)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype_ = torch_dtype(dtype)
    c = load_components(model, load_transformer=False, torch_dtype=dtype_)  # the encoders, as training loads them
    vae, text_encoder, tokenizer = c.vae, c.text_encoder, c.tokenizer
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
        # the row's image (else the family takes the clip's first frame, if it conditions on one), framed as raw
        # training frames it; an image-to-video family noises it once, seeded by the sample's key (per_clip)
        image = None
        if entry.image is not None:
            image = load_image(entry, Path(root), size[0], size[1]).unsqueeze(0).to(device, dtype_)
        tensors = family.encode_clips(vae, video.unsqueeze(0).to(device, dtype_), images=image, ids=[entry.key])
        return {**{k: v[0] for k, v in tensors.items()}, "prompt_embeds": embed(entry.caption), "size": size}

    return encode_entries(cache_dir, root, key, encode, lambda: embed(""), rank=rank, world_size=world_size,
                          progress=progress)
