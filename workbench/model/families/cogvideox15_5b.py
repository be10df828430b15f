"""CogVideoX1.5-5B (THUDM/CogVideoX1.5-5B): frames patched in pairs, a larger and freer canvas.

Released configs: the 5B transformer with ``patch_size_t=2`` (two latent frames per token), ``patch_bias``
False, the rotary grid of ``grid_type="slice"`` bounded by ``sample_height/width``, 226 text tokens; VAE scaling factor 0.7 with ``invert_scale_latents`` (it matters to image-to-video only: the
image latent is divided instead of multiplied by the factor); trained on 81 frames at 16 fps, 768x1360.

Latent frames: 4k+1 frames give k+1 latent frames, odd for 81 frames (21). The transformer takes an even
count (its patch embedding reshapes frames in pairs). ``CogVideoXPipeline.__call__`` samples
``patch_size_t - F % patch_size_t`` extra latent frames and drops that many from the **front** after
denoising (``latents = latents[:, additional_frames:]``, pipeline_cogvideox.py). Training pads the front
too: copies of the first latent frame are prepended and the loss covers every frame, as the CogVideo repo's
finetune code does (finetune/models/cogvideox_t2v/lora_trainer.py, ``compute_loss``), so the frame the
pipeline drops is the one training put there. The references disagree: finetrainers appends copies of the
*last* frame (and pads an even count by two more), which the pipeline does not drop; we follow the pipeline.

The rotary grid's bound ``sample_height/width`` differs between the published conversions (300 x 300 in
diffusers' conversion script, 96 x 170 in the CogVideo repo's): it is read from the model's config, and a
clip larger than it is a one-line error (a portrait 1360 x 768 needs a bound of at least 170 x 96).
"""

from __future__ import annotations

from workbench.model.families.base import Clip, FamilyError, register
from workbench.model.families.cogvideox_5b import CogVideoX5B


@register
class CogVideoX15_5B(CogVideoX5B):
    name = "cogvideox1.5-5b"
    title = "CogVideoX1.5-5B"
    hub_id = "THUDM/CogVideoX1.5-5B"
    native = Clip(num_frames=81, height=768, width=1360, fps=16)

    @classmethod
    def matches(cls, transformer_config) -> bool:
        return transformer_config.get("patch_size_t") is not None

    @property
    def patch_size_t(self) -> int:
        return int(self.transformer_config["patch_size_t"])

    def padding_frames(self, latent_frames: int) -> int:
        """Latent frames prepended so the count divides by ``patch_size_t`` (as the stock pipeline samples)."""
        return (-latent_frames) % self.patch_size_t

    def pad_latent_frames(self, latents):
        import torch

        n = self.padding_frames(latents.shape[1])
        if not n:
            return latents
        return torch.cat([latents[:, :1].expand(-1, n, -1, -1, -1), latents], dim=1)

    def check_clip(self, num_frames=None, height=None, width=None, where: str = "") -> None:
        """The family's rules, and a clip no larger than the rotary grid's bound (``sample_height/width``)."""
        super().check_clip(num_frames, height, width, where)
        self._check_rotary_bound(height, width, where)

    def _check_rotary_bound(self, height: int | None, width: int | None, where: str = "") -> None:
        cfg = self.transformer_config
        if "sample_height" not in cfg:
            return
        bound_h, bound_w = cfg["sample_height"] * 8, cfg["sample_width"] * 8
        if (height or 0) > bound_h or (width or 0) > bound_w:
            at = f"{where}: " if where else ""
            raise FamilyError(f"{at}{height}x{width}: larger than this {self.title} model's rotary grid "
                              f"({bound_h}x{bound_w}, its transformer config's sample_height/width x 8); "
                              "use a clip inside it")

    def rotary_embeddings(self, latent_frames: int, latent_height: int, latent_width: int, device):
        """As ``CogVideoXPipeline._prepare_rotary_positional_embeddings`` with ``patch_size_t`` set: the
        ``slice`` grid (positions counted from the top-left, no resize) bounded by the training canvas;
        ``latent_frames`` is the padded count."""
        from diffusers.models.embeddings import get_3d_rotary_pos_embed

        cfg = self.transformer_config
        p, p_t = cfg["patch_size"], self.patch_size_t
        grid_h, grid_w = latent_height // p, latent_width // p
        base_w, base_h = cfg["sample_width"] // p, cfg["sample_height"] // p
        self._check_rotary_bound(latent_height * 8, latent_width * 8)
        return get_3d_rotary_pos_embed(embed_dim=cfg["attention_head_dim"], crops_coords=None,
                                       grid_size=(grid_h, grid_w), temporal_size=(latent_frames + p_t - 1) // p_t,
                                       grid_type="slice", max_size=(base_h, base_w), device=device)

    def card_facts(self) -> dict[str, str]:
        facts = super().card_facts()
        facts["latent frames"] = (f"an odd count is padded to a multiple of {self.patch_size_t} by the pipeline "
                                  "(and was in training), any 4k+1 frame count works")
        return facts
