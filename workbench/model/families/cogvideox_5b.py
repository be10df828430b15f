"""CogVideoX-5B (THUDM/CogVideoX-5b): the 2B recipe at a larger width, with 3D rotary positions.

Released configs: 42 layers x 48 heads x 64, time_embed_dim 512, rotary positional embeddings
(use_rotary_positional_embeddings), VAE scaling factor 0.7, scheduler snr_shift_scale 1.0 (sampling:
CogVideoXDDIMScheduler, as diffusers' conversion script writes it), 226 text tokens; trained on 49 frames at 8 fps, 480x720.
"""

from __future__ import annotations

from workbench.model.families.base import Clip, register
from workbench.model.families.cogvideox_2b import CogVideoX2B


@register
class CogVideoX5B(CogVideoX2B):
    name = "cogvideox-5b"
    title = "CogVideoX-5B"
    hub_id = "THUDM/CogVideoX-5b"
    native = Clip(num_frames=49, height=480, width=720, fps=8)

    @classmethod
    def matches(cls, transformer_config) -> bool:
        return (bool(transformer_config.get("use_rotary_positional_embeddings", False))
                and transformer_config.get("patch_size_t") is None)

    def rotary_embeddings(self, latent_frames: int, latent_height: int, latent_width: int, device):
        """As ``CogVideoXPipeline._prepare_rotary_positional_embeddings`` with ``patch_size_t`` None: the grid
        resized and centre-cropped into the base grid of the training size (``sample_height/width``)."""
        from diffusers.models.embeddings import get_3d_rotary_pos_embed
        from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

        cfg = self.transformer_config
        p = cfg["patch_size"]
        grid_h, grid_w = latent_height // p, latent_width // p
        base_w, base_h = cfg["sample_width"] // p, cfg["sample_height"] // p
        crops = get_resize_crop_region_for_grid((grid_h, grid_w), base_w, base_h)
        return get_3d_rotary_pos_embed(embed_dim=cfg["attention_head_dim"], crops_coords=crops,
                                       grid_size=(grid_h, grid_w), temporal_size=latent_frames, device=device)
