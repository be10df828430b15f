"""Speed levers for the transformer: partial activation checkpointing and regional compilation."""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def enable_partial_checkpointing(transformer, fraction: float = 1.0) -> int:
    """Recompute the activations of the first ``fraction`` of the transformer blocks in backward.

    Goes through diffusers' own hook (``enable_gradient_checkpointing(gradient_checkpointing_func)``),
    so the model's forward is untouched; the other blocks keep their activations. Returns how many
    blocks are checkpointed. 1.0 is diffusers' full checkpointing; 0.0 turns it off.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"checkpoint_fraction={fraction}: must be in [0, 1]")
    blocks = list(transformer.transformer_blocks)
    n = round(len(blocks) * fraction)
    if n == 0:
        transformer.disable_gradient_checkpointing()
        return 0
    selected = {id(b) for b in blocks[:n]}

    def checkpoint_some(module, *args):
        if id(module) in selected:
            return checkpoint(module.__call__, *args, use_reentrant=False)
        return module(*args)

    transformer.enable_gradient_checkpointing(gradient_checkpointing_func=checkpoint_some)
    return n


def compile_blocks(transformer, mode: str | None = None) -> None:
    """Regional compilation: ``torch.compile`` each transformer block in place (``nn.Module.compile``).

    All blocks share one graph, so compile time is one block's, not the model's; the block
    sequence, checkpointing and the PEFT layers around it stay in eager mode. Used for training
    (``compile_blocks`` in the recipes) and for sampling (``workbench eval/generate --compile``):
    a pipeline's blocks compile once per video shape, on the first denoising step.
    """
    for block in transformer.transformer_blocks:
        block.compile(mode=mode, dynamic=False)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
