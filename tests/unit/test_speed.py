"""Speed levers must not change the numbers: partial checkpointing gives the same gradients."""

import copy

import pytest
import torch
from tests.helpers.transformer import loss_and_grads, tiny_transformer
from workbench.model.speed import enable_partial_checkpointing


@pytest.fixture(scope="module")
def net():
    return tiny_transformer(num_layers=4)


def _grads(net, fraction):
    m = copy.deepcopy(net).train()
    n = enable_partial_checkpointing(m, fraction) if fraction is not None else None
    return n, loss_and_grads(m)[1]


@pytest.mark.parametrize("fraction,blocks", [(0.0, 0), (0.25, 1), (0.5, 2), (1.0, 4)])
def test_partial_checkpointing_is_exact(net, fraction, blocks):
    _, reference = _grads(net, None)
    n, grads = _grads(net, fraction)
    assert n == blocks
    torch.testing.assert_close(grads, reference, rtol=0, atol=0)


def test_fraction_out_of_range(net):
    with pytest.raises(ValueError, match="checkpoint_fraction"):
        enable_partial_checkpointing(copy.deepcopy(net), 1.5)
