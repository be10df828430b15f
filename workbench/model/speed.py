"""Speed levers for the transformer: partial and selective activation checkpointing, regional compilation.

**Selective activation checkpointing** (``checkpoint_policy``): a checkpointed block normally recomputes its
whole forward in the backward pass, attention included, the most expensive op of a block. A policy names the
ops whose outputs the forward keeps instead (torch.utils.checkpoint.create_selective_checkpoint_contexts, as
torchtitan's "op" policy), so the backward recomputes only what is cheap:

- ``full``: keep nothing (plain checkpointing, what diffusers does);
- ``attention``: keep the attention kernel's outputs (PyTorch SDPA's flash / efficient / cuDNN / CPU kernels and
  the workbench's FlashAttention-4 op): about one (tokens x width) tensor per block, 4.6 GiB over 5B's 42 blocks
  at 49 x 480 x 720 in bf16;
- ``attention_and_matmuls``: also every other matmul output (torchtitan's policy: mm/addmm outputs alternately kept
  and recomputed), about 3x the memory of ``attention``.

The values are bitwise those of full checkpointing on the CPU (tests/unit/test_selective_checkpointing.py):
a kept output is the one the forward computed.

With compiled blocks (``compile_blocks``), a block under a selective policy is compiled *with* its checkpoint
(torch.compile of ``checkpoint(block.forward, context_fn=...)``, as torchtitan orders it), so the policy is
applied by AOTAutograd's partitioner inside the compiled graph; an eager checkpoint around a compiled block could
not see the ops of the compiled graph.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import torch
from torch.utils.checkpoint import checkpoint

CHECKPOINT_POLICIES = ("full", "attention", "attention_and_matmuls")
# Set on a checkpointed block (read through wrappers: FSDP forwards unknown attributes to the wrapped module,
# and FSDP's auto-wrapping replaces the blocks in the ModuleList after this was set, so ids would not match).
_POLICY_ATTR = "_workbench_checkpoint_policy"
_COMPILE_ATTR = "_workbench_compile_options"


def attention_ops() -> set:
    """The attention ops a selective policy keeps: PyTorch SDPA's kernels and FlashAttention-4 as the workbench
    registers it (workbench.model.attention, ``workbench::flash4_attention``) where it is registered."""
    aten = torch.ops.aten
    names = ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
             "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
             "_flash_attention_forward", "_efficient_attention_forward")
    ops = {getattr(aten, n).default for n in names if hasattr(aten, n)}
    workbench = getattr(torch.ops, "workbench", None)
    if workbench is not None and hasattr(workbench, "flash4_attention"):
        ops.add(workbench.flash4_attention.default)
    return ops


def _matmul_ops() -> set:
    aten = torch.ops.aten
    return {aten.mm.default, aten.addmm.default, aten._scaled_mm.default}


def _policy_fn(policy: str):
    """The op policy of ``policy`` for create_selective_checkpoint_contexts (a new count of matmuls per call)."""
    from torch.utils.checkpoint import CheckpointPolicy

    keep_attention = attention_ops()
    matmuls = _matmul_ops() if policy == "attention_and_matmuls" else set()
    counts = defaultdict(int)

    def decide(ctx, op, *args, **kwargs):
        if op in keep_attention:
            return CheckpointPolicy.MUST_SAVE
        if op in matmuls:  # every other matmul kept, counted apart in the forward and in the recomputation
            key = "recompute" if ctx.is_recompute else "forward"
            counts[key] += 1
            if counts[key] % 2:
                return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return decide


def _contexts(policy: str):
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    return create_selective_checkpoint_contexts(_policy_fn(policy))


# module-level objects, so a compiled checkpoint reads them as constants
_CONTEXT_FNS = {policy: functools.partial(_contexts, policy) for policy in CHECKPOINT_POLICIES if policy != "full"}


def selective_context(policy: str):
    """``context_fn`` for torch.utils.checkpoint.checkpoint under ``policy`` (None for ``full``)."""
    if policy not in CHECKPOINT_POLICIES:
        raise ValueError(f"checkpoint_policy={policy!r}: choose one of {', '.join(CHECKPOINT_POLICIES)}")
    return _CONTEXT_FNS.get(policy)


def _checkpointed_forward(block, policy: str, *args):
    """One block's forward under its checkpoint; compiled as a whole for compiled blocks."""
    return checkpoint(block.forward, *args, use_reentrant=False, context_fn=selective_context(policy))


@functools.cache
def _compiled_checkpointed_forward(options: tuple):
    # one compiled function for every block (the block is an argument: its parameters are graph inputs)
    return torch.compile(_checkpointed_forward, dynamic=False, **dict(options))


def checkpoint_block(module, *args):
    """diffusers' ``gradient_checkpointing_func``: a block marked by ``enable_partial_checkpointing`` is
    checkpointed under its policy, any other runs as it is."""
    policy = getattr(module, _POLICY_ATTR, None)
    if policy is None:
        return module(*args)
    if policy == "full":
        return checkpoint(module.__call__, *args, use_reentrant=False)
    options = getattr(module, _COMPILE_ATTR, None)
    if options is not None and getattr(module, "_compiled_call_impl", None) is not None:
        return _compiled_checkpointed_forward(options)(module, policy, *args)
    return checkpoint(module.__call__, *args, use_reentrant=False, context_fn=selective_context(policy))


def enable_partial_checkpointing(transformer, fraction: float = 1.0, policy: str = "full") -> int:
    """Recompute the activations of the first ``fraction`` of the transformer blocks in backward, all of
    them (``policy`` ``full``) or all but the ops a selective policy keeps (see the module's docstring).

    Goes through diffusers' own hook (``enable_gradient_checkpointing(gradient_checkpointing_func)``),
    so the model's forward is untouched; the other blocks keep their activations. Returns how many
    blocks are checkpointed. 1.0 is diffusers' full checkpointing; 0.0 turns it off.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"checkpoint_fraction={fraction}: must be in [0, 1]")
    selective_context(policy)  # checks the name
    blocks = list(transformer.transformer_blocks)
    n = round(len(blocks) * fraction)
    for i, block in enumerate(blocks):
        setattr(block, _POLICY_ATTR, policy if i < n else None)
    if n == 0:
        transformer.disable_gradient_checkpointing()
        return 0
    transformer.enable_gradient_checkpointing(gradient_checkpointing_func=checkpoint_block)
    return n


def compile_blocks(transformer, mode: str | None = None, backend: str = "inductor") -> None:
    """Regional compilation: ``torch.compile`` each transformer block in place (``nn.Module.compile``).

    All blocks share one graph, so compile time is one block's, not the model's; the block
    sequence, checkpointing and the PEFT layers around it stay in eager mode. Used for training
    (``compile_blocks`` in the recipes) and for sampling (``workbench eval/generate --compile``):
    a pipeline's blocks compile once per video shape, on the first denoising step. A block under a selective
    checkpoint policy is compiled together with its checkpoint for training (``checkpoint_block``).
    """
    for block in transformer.transformer_blocks:
        block.compile(mode=mode, dynamic=False, backend=backend)
        setattr(block, _COMPILE_ATTR, tuple(sorted({"mode": mode, "backend": backend}.items())))
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
