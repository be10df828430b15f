"""The CogVideoX training objective as pure functions.

Follows the diffusers CogVideoX trainer (examples/cogvideo/train_cogvideox_lora.py) and the
CogVideo repo's finetune code: uniform integer timesteps, noisy = add_noise(x0, eps, t), the
transformer predicts v, x0_hat = get_velocity(v, noisy, t) (= sqrt(a_t) * noisy - sqrt(1 - a_t) * v),
loss = mean(w_t * (x0_hat - x0)^2) with w_t = 1 / (1 - alphas_cumprod[t]).
"""

from __future__ import annotations

import torch


def sample_timesteps(batch_size: int, num_train_timesteps: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform integer timesteps in [0, num_train_timesteps)."""
    t = torch.randint(0, num_train_timesteps, (batch_size,), generator=generator)
    return t.to(device)


def loss_weights(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """w_t = 1 / (1 - alphas_cumprod[t]), the CogVideoX x0-space weighting (equivalent to v-loss)."""
    return 1.0 / (1.0 - alphas_cumprod.to(timesteps.device)[timesteps].float())


def v_to_x0(alphas_cumprod: torch.Tensor, v: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """x0 prediction from a v prediction; identical to ``scheduler.get_velocity(v, noisy, t)``."""
    a = alphas_cumprod.to(device=noisy.device, dtype=noisy.dtype)[timesteps]
    shape = (-1,) + (1,) * (noisy.ndim - 1)
    return a.sqrt().view(shape) * noisy - (1 - a).sqrt().view(shape) * v


def weighted_x0_loss(x0_pred: torch.Tensor, x0: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of w_t * (x0_pred - x0)^2, then mean over the batch (computed in fp32)."""
    err = (x0_pred.float() - x0.float()) ** 2
    per_sample = err.reshape(err.shape[0], -1).mean(dim=1) * weights.float()
    return per_sample.mean()


def diffusion_loss(transformer, scheduler, latents: torch.Tensor, prompt_embeds: torch.Tensor,
                   noise: torch.Tensor | None = None, timesteps: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, family=None,
                   image_latents: torch.Tensor | None = None) -> torch.Tensor:
    """One CogVideoX training loss for ``latents`` (B, F, C, H, W), already scaled by the VAE factor and with
    the frame count the transformer takes (``family.pad_latent_frames``: CogVideoX1.5 patches frame pairs).

    ``noise``/``timesteps`` may be fixed by the caller (validation uses a seeded fixed draw). ``family``
    (workbench.model.families) gives the rotary grid and the transformer's inputs (an image-to-video family
    concatenates ``image_latents`` (B, F, C, H, W, ``family.image_latents``) on channels and adds ``ofs``, as its
    stock pipeline calls the transformer); default: the family of the transformer's config. The loss covers the
    video latents only.
    """
    if family is None:
        from workbench.model.families import family_of_configs

        family = family_of_configs(transformer.config)
    b, f, _, h, w = latents.shape
    if family.padding_frames(f):
        raise ValueError(f"{f} latent frames: {family.title} needs {family.padding_frames(f)} more in front (it "
                         "patches frames in pairs); pad them first (ModelFamily.pad_latent_frames), as the pipeline "
                         "does")
    if timesteps is None:
        timesteps = sample_timesteps(b, scheduler.config.num_train_timesteps, generator).to(latents.device)
    if noise is None:
        noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype).to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    rotary = family.rotary_embeddings(f, h, w, latents.device)
    v = transformer(**family.transformer_inputs(noisy, image_latents), encoder_hidden_states=prompt_embeds,
                    timestep=timesteps, image_rotary_emb=rotary, return_dict=False)[0]
    x0_pred = v_to_x0(scheduler.alphas_cumprod, v, noisy, timesteps)
    return weighted_x0_loss(x0_pred, latents, loss_weights(scheduler.alphas_cumprod, timesteps))
