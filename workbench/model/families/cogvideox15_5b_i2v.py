"""CogVideoX1.5-5B-I2V (THUDM/CogVideoX1.5-5B-I2V): CogVideoX1.5-5B conditioned on an image.

Released configs: the 1.5 transformer (``patch_size_t=2``, the ``slice`` rotary grid) with ``in_channels`` 32
and an ofs embedding (``ofs_embed_dim`` 512, passed 2.0); VAE ``invert_scale_latents``, so the stock pipeline
*divides* the image latent by the scaling factor (image_to_video.py says why we follow it). Odd latent frame
counts are padded in front as for CogVideoX1.5 (the pipeline samples the padding frame and drops it); the image
latent sits in that first (padding) frame, zeros after it. Any size inside the rotary grid, any 4k+1 frames.
"""

from __future__ import annotations

from workbench.model.families.base import Clip, register
from workbench.model.families.cogvideox15_5b import CogVideoX15_5B
from workbench.model.families.image_to_video import ImageToVideo


@register
class CogVideoX15_5B_I2V(ImageToVideo, CogVideoX15_5B):
    name = "cogvideox1.5-5b-i2v"
    title = "CogVideoX1.5-5B-I2V"
    hub_id = "THUDM/CogVideoX1.5-5B-I2V"
    native = Clip(num_frames=81, height=768, width=1360, fps=16)
