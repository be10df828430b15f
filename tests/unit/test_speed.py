"""Speed levers must not change the numbers: partial checkpointing gives the same gradients."""

import copy

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel

from workbench.model.speed import enable_partial_checkpointing


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                       time_embed_dim=8, text_embed_dim=16, num_layers=4, sample_width=8,
                                       sample_height=8, sample_frames=9, max_text_seq_length=8)


def _grads(net, fraction):
    m = copy.deepcopy(net).train()
    n = enable_partial_checkpointing(m, fraction) if fraction is not None else None
    g = torch.Generator().manual_seed(1)
    x, e = torch.randn(1, 3, 4, 8, 8, generator=g), torch.randn(1, 8, 16, generator=g)
    m(hidden_states=x, encoder_hidden_states=e, timestep=torch.tensor([10])).sample.square().mean().backward()
    return n, torch.cat([p.grad.flatten() for p in m.parameters()])


@pytest.mark.parametrize("fraction,blocks", [(0.0, 0), (0.25, 1), (0.5, 2), (1.0, 4)])
def test_partial_checkpointing_is_exact(net, fraction, blocks):
    _, reference = _grads(net, None)
    n, grads = _grads(net, fraction)
    assert n == blocks
    torch.testing.assert_close(grads, reference, rtol=0, atol=0)


def test_fraction_out_of_range(net):
    with pytest.raises(ValueError, match="checkpoint_fraction"):
        enable_partial_checkpointing(copy.deepcopy(net), 1.5)
