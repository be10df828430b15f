"""What the image-to-video members of the family share: the image's latents, as the stock
``CogVideoXImageToVideoPipeline`` (diffusers pipeline_cogvideox_image2video.py, ``prepare_latents`` and
``__call__``) feeds them to the transformer, so that an export samples what the run trained.

The transformer of an I2V model takes twice the latent channels (``in_channels == 2 * out_channels``): the
noisy video latents, then on channels the image latents, which are the conditioning image's latent in the
first latent frame and zeros in every other (``torch.cat([image_latents, zeros(F - 1)])``; for CogVideoX1.5
the pipeline first pads the *video* to an even latent count, so the image sits in the padding frame it
drops after sampling, and training pads the same way: ``ModelFamily.pad_latent_frames``). Where the references
disagree (the issue "Image-to-video" lists them) this module follows the stock pipeline; the rest:

- **Noise augmentation of the image**, in pixel space before encoding: sigma = exp(N(-3, 0.5)), image +
  sigma * eps (diffusers examples/cogvideo/train_cogvideox_image_to_video_lora.py and the CogVideo repo's
  finetune/models/cogvideox_i2v/lora_trainer.py agree on the distribution). *When*: once per clip at
  encoding in the diffusers example, every step in the CogVideo repo: the recipe's ``model.image.noise``
  (``per_clip``, the default, with each clip's draws seeded by its sample key (``Entry.key``: the file name, with
  a range row's range), so a cached and a raw sample
  are conditioned alike; or ``per_step``, which encodes the image every step and so needs the VAE resident).
  The stock pipeline adds no noise to the image it samples from.
- **Scaling of the image latent**: the VAE's scaling factor multiplies it unless the VAE config sets
  ``invert_scale_latents`` (CogVideoX1.5), where the pipeline *divides* by it ("the CogVideoX team forgot to
  multiply the scaling factor during training"); the CogVideo repo and CogKit train 1.5-I2V with multiplication,
  which the stock pipeline then samples wrongly: we follow the pipeline (``scale_image_latents``).
- **Image-latent dropout** (the image latents replaced by zeros): 5 % in the diffusers example
  (``noised_image_dropout``) and the released SAT configs, none in the CogVideo repo: ``model.image.dropout``,
  default 0.05, as the released models were trained.
- **ofs**: CogVideoX1.5-I2V's transformer has an ofs embedding (``ofs_embed_dim``); the pipeline passes 2.0.
"""

from __future__ import annotations

import zlib

import torch

IMAGE_NOISE_LOG_SIGMA = (-3.0, 0.5)  # sigma = exp(N(mean, std)): the diffusers example and the CogVideo repo
OFS = 2.0  # what CogVideoXImageToVideoPipeline passes as ``ofs`` when the transformer has an ofs embedding


def clip_generators(ids, seed: int = 0) -> list[torch.Generator]:
    """One CPU generator per clip, seeded by its id (``Entry.key``) through crc32 (stable across processes, unlike
    ``hash`` of a string): the per-clip image noise is the same in ``prepare`` and in raw-video training."""
    return [torch.Generator().manual_seed((seed << 32) ^ zlib.crc32(str(i).encode())) for i in ids]


class ImageToVideo:
    """Mixed into an image-to-video family, before its text-to-video parent."""

    image_conditioned = True
    pipeline_class = "CogVideoXImageToVideoPipeline"

    @staticmethod
    def noised_images(images: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """images (B, C, H, W) in [-1, 1] plus sigma * eps, sigma = exp(N(-3, 0.5)), one draw per image from
        its generator (CPU draws: the same on every device)."""
        mean, std = IMAGE_NOISE_LOG_SIGMA
        out = []
        for image, g in zip(images, generators):
            sigma = torch.exp(mean + std * torch.randn((), generator=g))
            out.append(image.float().cpu() + sigma * torch.randn(image.shape, generator=g))
        return torch.stack(out).to(images.device)

    def encode_images(self, vae, images: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """The VAE's latent distribution (B, 2C, 1, H/8, W/8) of the noised images, as one-frame videos."""
        noisy = self.noised_images(images, generators).to(vae.device, vae.dtype)
        return vae.encode(noisy.unsqueeze(2)).latent_dist.parameters

    def encode_clips(self, vae, videos, images=None, generators=None) -> dict:
        """The clip's latent distribution, its conditioning image (``images``, else the clip's first frame) as
        ``image`` (C, H, W in [-1, 1]) and the latent distribution of that image noised once (``per_clip``:
        ``generators`` seeded per clip) as ``image_latent_dist``."""
        out = super().encode_clips(vae, videos)
        images = videos[:, :, 0] if images is None else images
        if generators is None:
            raise ValueError("image-to-video encoding needs one generator per clip (clip_generators)")
        out["image"] = images.to(torch.float32)
        out["image_latent_dist"] = self.encode_images(vae, images, generators)
        return out

    def scale_image_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """As the pipeline: multiplied by the scaling factor, or divided by it with ``invert_scale_latents``."""
        if (self.vae_config or {}).get("invert_scale_latents"):
            return latents / self.scaling_factor
        return latents * self.scaling_factor

    def image_latents(self, image_sample: torch.Tensor, latent_frames: int) -> torch.Tensor:
        """The transformer's image input (B, F, C, H, W): the scaled latent of the image (B, C, 1, H, W, a draw
        of its latent distribution) in the first of ``latent_frames`` (the padded count), zeros after it."""
        first = self.scale_image_latents(image_sample).permute(0, 2, 1, 3, 4)
        pad = first.new_zeros(first.shape[0], latent_frames - 1, *first.shape[2:])
        return torch.cat([first, pad], dim=1)

    def transformer_inputs(self, noisy, image_latents=None) -> dict:
        if image_latents is None:
            raise ValueError(f"{self.title} is an image-to-video family: the transformer needs image latents")
        kwargs = {"hidden_states": torch.cat([noisy, image_latents.to(noisy.dtype)], dim=2)}
        if self.transformer_config.get("ofs_embed_dim"):
            kwargs["ofs"] = noisy.new_full((1,), OFS)
        return kwargs

    def card_facts(self) -> dict[str, str]:
        facts = super().card_facts()
        facts["conditioning"] = ("a text prompt and an image (the video's first frame), as "
                                 "CogVideoXImageToVideoPipeline(image=..., prompt=...) samples")
        return facts
