"""CogVideoX-5B-I2V (THUDM/CogVideoX-5b-I2V): CogVideoX-5B conditioned on an image.

Released configs: the 5B transformer with ``in_channels`` 32 (the video's 16 latent channels + the image's),
rotary positions *and* learned positional embeddings (``use_learned_positional_embeddings``) for the
sample size 60 x 90 latents and 49 frames; VAE scaling 0.7 (the image latent is multiplied by it, as the
pipeline does); sampled by ``CogVideoXImageToVideoPipeline``. What it shares with the other I2V family:
image_to_video.py.

The learned positions fix the clip: diffusers raises at another height or width ("It is currently not
possible to generate videos at a different resolution"), and at another frame count it silently replaces the
learned table with sincos positions the model never trained with. A clip other than the model's sample size is
therefore a one-line error here (finetrainers drops the learned positions to train other sizes, "quality almost
the same"; that is not built).
"""

from __future__ import annotations

from workbench.model.families.base import Clip, FamilyError, register
from workbench.model.families.cogvideox_5b import CogVideoX5B
from workbench.model.families.image_to_video import ImageToVideo


@register
class CogVideoX5B_I2V(ImageToVideo, CogVideoX5B):
    name = "cogvideox-5b-i2v"
    title = "CogVideoX-5B-I2V"
    hub_id = "THUDM/CogVideoX-5b-I2V"
    native = Clip(num_frames=49, height=480, width=720, fps=8)

    def check_clip(self, num_frames=None, height=None, width=None, where: str = "") -> None:
        super().check_clip(num_frames, height, width, where)
        cfg = self.transformer_config
        if not cfg.get("use_learned_positional_embeddings"):
            return
        fixed = (cfg["sample_frames"], cfg["sample_height"] * 8, cfg["sample_width"] * 8)
        for value, want, what in zip((num_frames, height, width), fixed, ("num_frames", "height", "width")):
            if value is not None and value != want:
                at = f"{where}: " if where else ""
                raise FamilyError(f"{at}{what}={value}: {self.title}'s learned positional embeddings fix its clip to "
                                  f"{fixed[0]} frames at {fixed[1]}x{fixed[2]}; use {what}: {want} (and no buckets)")
