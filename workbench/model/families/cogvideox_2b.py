"""CogVideoX-2B (THUDM/CogVideoX-2b): where the workbench started.

Released configs (diffusers scripts/convert_cogvideox_to_diffusers.py, the hub's transformer/vae configs):
30 layers x 30 heads x 64, sincos positional embeddings (no rotary), VAE scaling factor 1.15258426, scheduler
snr_shift_scale 3.0 (sampling: CogVideoXDDIMScheduler), 226 text tokens; trained on 49 frames at 8 fps, 480x720.
"""

from __future__ import annotations

from workbench.model.families.base import Clip, ModelFamily, register


@register
class CogVideoX2B(ModelFamily):
    name = "cogvideox-2b"
    title = "CogVideoX-2B"
    hub_id = "THUDM/CogVideoX-2b"
    native = Clip(num_frames=49, height=480, width=720, fps=8)

    @classmethod
    def matches(cls, transformer_config) -> bool:
        return (not transformer_config.get("use_rotary_positional_embeddings", False)
                and transformer_config.get("patch_size_t") is None)
