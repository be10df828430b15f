"""Selective activation checkpointing (model.speed.checkpoint_policy) keeps some ops' outputs instead of
recomputing them: the loss and the gradients stay those of full checkpointing, eager and compiled."""

import copy

import pytest
import torch
from tests.helpers.transformer import inputs as _inputs
from tests.helpers.transformer import loss_and_grads as _loss_and_grads
from tests.helpers.transformer import tiny_transformer
from workbench.model.speed import (CHECKPOINT_POLICIES, attention_ops, checkpoint_block, compile_blocks,
                                   enable_partial_checkpointing)


@pytest.fixture(scope="module")
def net():
    return tiny_transformer(num_layers=3)


def _run(net, policy, fraction=1.0, compile_backend=None):
    m = copy.deepcopy(net).train()
    n = enable_partial_checkpointing(m, fraction, policy)
    if compile_backend is not None:
        compile_blocks(m, backend=compile_backend)
    return n, *_loss_and_grads(m)


@pytest.mark.parametrize("policy", CHECKPOINT_POLICIES[1:])
@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_selective_policy_is_exact(net, policy, fraction):
    _, ref_loss, ref_grads = _run(net, "full", fraction)
    n, loss, grads = _run(net, policy, fraction)
    assert n == round(3 * fraction)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)
    torch.testing.assert_close(grads, ref_grads, rtol=0, atol=0)


def test_attention_policy_keeps_the_attention_op(net, monkeypatch):
    """The CPU's SDPA kernel is among the kept ops, and the policy is consulted for it."""
    import workbench.model.speed as speed

    assert torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default in attention_ops()
    kept = []
    original = speed._policy_fn

    def spying(policy):
        decide = original(policy)

        def wrapped(ctx, op, *a, **k):
            out = decide(ctx, op, *a, **k)
            if out.name.startswith("MUST"):
                kept.append(op)
            return out
        return wrapped

    monkeypatch.setattr(speed, "_policy_fn", spying)
    _run(net, "attention")
    assert kept and set(kept) <= attention_ops()


def test_selective_policy_runs_compiled(net):
    """Compiled blocks are compiled with their checkpoint (the graph shared by the blocks), same numbers."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    _, ref_loss, ref_grads = _run(net, "full")
    counter = CompileCounterWithBackend("aot_eager")
    _, loss, grads = _run(net, "attention_and_matmuls", compile_backend=counter)
    assert counter.frame_count >= 1 and counter.op_count > 0
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    torch.testing.assert_close(grads, ref_grads, rtol=0, atol=1e-6)


def test_checkpointing_survives_block_wrapping(net):
    """A block wrapped after the policy was set (FSDP's auto-wrapping replaces the blocks in their ModuleList)
    is still checkpointed: the policy is an attribute read through the wrapper, not the block's id."""
    calls = []

    class Wrapper(torch.nn.Module):  # forwards unknown attributes, as FSDP does
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.inner, name)

        def forward(self, *args, **kwargs):
            calls.append(torch.is_grad_enabled())
            return self.inner(*args, **kwargs)

    m = copy.deepcopy(net).train()
    enable_partial_checkpointing(m, 1.0, "full")
    for i, block in enumerate(list(m.transformer_blocks)):
        m.transformer_blocks[i] = Wrapper(block)
    _loss_and_grads(m)
    assert len(calls) == 6  # forward and recomputation of each of the 3 blocks


def test_unknown_policy(net):
    with pytest.raises(ValueError, match="checkpoint_policy"):
        enable_partial_checkpointing(copy.deepcopy(net), 1.0, "everything")
    assert checkpoint_block is not None


def _fp8_lora_net():
    from peft import LoraConfig

    m = tiny_transformer(num_layers=2)
    m.requires_grad_(False).to(torch.bfloat16)
    m.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                             target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    for p in m.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    m.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    return m.train()


def _fp8_step(policy, backend=None):
    m = _fp8_lora_net()
    enable_partial_checkpointing(m, 1.0, policy)
    if backend is not None:
        compile_blocks(m, backend=backend)
    x, e = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m(hidden_states=x, encoder_hidden_states=e, timestep=torch.tensor([10])).sample.float().square().mean()
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])


def test_fp8_storage_with_compiled_selective_checkpointing():
    """fp8 storage + compiled blocks + checkpointing: the eager checkpoint around a compiled block fails on the CPU
    as it did on an H200 (CheckpointError, fp8 weights recomputed where bf16 were saved); the selective policy,
    compiled with its checkpoint, trains with eager full checkpointing's numbers, and the module accepts it."""
    from torch.utils.checkpoint import CheckpointError

    from workbench.train.module import CogVideoXModule

    torch._dynamo.reset()
    ref_loss, ref_grads = _fp8_step("full")
    with pytest.raises(CheckpointError, match="different metadata"):
        _fp8_step("full", backend="aot_eager")
    torch._dynamo.reset()
    loss, grads = _fp8_step("attention", backend="aot_eager")
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    torch.testing.assert_close(grads, ref_grads, rtol=0, atol=1e-6)
    speed = {"frozen_storage": "fp8", "compile_blocks": True, "gradient_checkpointing": True}
    CogVideoXModule(model="m", mode="lora", frozen_dtype="bf16", speed={**speed, "checkpoint_policy": "attention"})
    with pytest.raises(ValueError, match="checkpoint_policy 'full'"):
        CogVideoXModule(model="m", mode="lora", frozen_dtype="bf16", speed=speed)


@pytest.fixture
def flash4_op():
    """FlashAttention-4 as the op ``workbench::flash4_attention``, its kernels replaced by CPU references."""
    from tests.helpers.kernels import reference_flash4_backward, reference_flash4_forward
    from workbench.model.attention import set_flash4_kernels

    set_flash4_kernels(reference_flash4_forward, reference_flash4_backward)
    yield
    set_flash4_kernels(None)


def _flash4_net(net):
    from workbench.model.attention import Flash4Attention

    m = copy.deepcopy(net).to(torch.bfloat16).train()
    m.set_attn_processor(Flash4Attention())
    return m


def _bf16_step(m):
    x, e = _inputs()
    loss = m(hidden_states=x.bfloat16(), encoder_hidden_states=e.bfloat16(),
             timestep=torch.tensor([10])).sample.float().square().mean()
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten().float() for p in m.parameters()])


def test_flash4_op_is_kept_and_compiles(net, flash4_op):
    """The FlashAttention-4 op: gradients as the autograd reference's; a selective policy keeps its output
    (eager: bitwise full checkpointing's numbers), and compiled with its checkpoint it traces without a
    graph break (one graph per block call)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    from tests.helpers.kernels import strict_flash_attn_func
    from workbench.model.attention import Flash4Attention

    assert torch.ops.workbench.flash4_attention.default in attention_ops()
    reference = copy.deepcopy(net).to(torch.bfloat16).train()
    reference.set_attn_processor(Flash4Attention(flash_fn=strict_flash_attn_func))
    ref_loss, ref_grads = _bf16_step(reference)
    plain = _flash4_net(net)
    loss, grads = _bf16_step(plain)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(grads, ref_grads, rtol=5e-2, atol=5e-3)
    full = _flash4_net(net)
    enable_partial_checkpointing(full, 1.0, "full")
    full_loss, full_grads = _bf16_step(full)
    sac = _flash4_net(net)
    enable_partial_checkpointing(sac, 1.0, "attention")
    sac_loss, sac_grads = _bf16_step(sac)
    torch.testing.assert_close(sac_loss, full_loss, rtol=0, atol=0)
    torch.testing.assert_close(sac_grads, full_grads, rtol=0, atol=0)
    torch._dynamo.reset()
    compiled = _flash4_net(net)
    enable_partial_checkpointing(compiled, 1.0, "attention")
    counter = CompileCounterWithBackend("aot_eager")
    compile_blocks(compiled, backend=counter)
    from torch._dynamo.utils import counters

    counters.clear()
    c_loss, c_grads = _bf16_step(compiled)
    assert not counters["graph_break"]  # none at the attention call
    assert 1 <= counter.frame_count <= 2  # the first block's input has other strides: one recompile
    torch.testing.assert_close(c_loss, full_loss, rtol=0, atol=1e-6)
    torch.testing.assert_close(c_grads, full_grads, rtol=0, atol=1e-2)
