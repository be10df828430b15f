"""A tiny CogVideoX transformer and one training-like step on it, for the tests of the speed levers
(tests/unit/test_speed.py, tests/unit/test_selective_checkpointing.py): they compare losses and gradients."""

from __future__ import annotations

import torch


def tiny_transformer(num_layers: int):
    """The real diffusers class at toy widths, seeded (rotary-free 2B-style config, 9 frames of 8x8 latents)."""
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                       time_embed_dim=8, text_embed_dim=16, num_layers=num_layers, sample_width=8,
                                       sample_height=8, sample_frames=9, max_text_seq_length=8)


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 3, 4, 8, 8, generator=g), torch.randn(1, 8, 16, generator=g)


def loss_and_grads(m) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed input's mean squared output, backpropagated: the loss and every parameter's gradient, flattened."""
    x, e = inputs()
    loss = m(hidden_states=x, encoder_hidden_states=e, timestep=torch.tensor([10])).sample.square().mean()
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in m.parameters()])
