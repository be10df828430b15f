"""``speed.frozen_storage: fp8`` (diffusers' layerwise casting of the frozen base weights): the base weights are
stored in float8, the LoRA weights stay float32 and train, the norms and embeddings stay in the compute dtype,
and the loss stays close to the bf16 one."""

from __future__ import annotations

import pytest
import torch

from workbench.train.module import CogVideoXModule


def _module(model_dir, **speed):
    module = CogVideoXModule(model=str(model_dir), mode="lora", lora={"rank": 4, "alpha": 4}, frozen_dtype="bf16",
                             encoders="offload", speed=speed)
    module.configure_model()
    return module


def _loss(module):
    g = [torch.Generator().manual_seed(0)]
    batch = {"latent_dist": torch.randn(1, 8, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
             "prompt_embeds": torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(2)), "caption": ["x"]}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module.batch_loss(batch, g, train=False)
    loss.backward()
    return loss.detach()


@pytest.fixture(scope="module")
def tiny_5b(tmp_path_factory):
    from workbench.model.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-5b", family="cogvideox-5b")


def test_fp8_storage_keeps_lora_fp32_and_trains(tiny_5b):
    bf16, fp8 = _module(tiny_5b), _module(tiny_5b, frozen_storage="fp8")
    block = fp8.transformer.transformer_blocks[0]
    assert block.attn1.to_q.base_layer.weight.dtype == torch.float8_e4m3fn
    assert block.ff.net[0].proj.weight.dtype == torch.float8_e4m3fn
    assert block.attn1.to_q.lora_A["default"].weight.dtype == torch.float32  # PEFT layers are skipped
    assert block.norm1.linear.weight.dtype == torch.bfloat16  # norms ("norm" in the name) stay in compute dtype
    assert fp8.transformer.patch_embed.proj.weight.dtype == torch.bfloat16
    resident = {m: sum(p.numel() * p.element_size() for p in m.transformer.parameters()) for m in (bf16, fp8)}
    assert resident[fp8] < 0.7 * resident[bf16]
    a, b = _loss(bf16), _loss(fp8)
    assert abs(float(a) - float(b)) / float(a) < 0.05, (float(a), float(b))
    grads = [p.grad for p in fp8.trainable_parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.dtype == torch.float32 for p in fp8.trainable_parameters())
    assert block.attn1.to_q.base_layer.weight.dtype == torch.float8_e4m3fn  # back in storage after the step


def test_fp8_storage_needs_lora_and_a_low_precision_compute_dtype():
    fp8 = {"frozen_storage": "fp8"}
    with pytest.raises(ValueError, match="speed.frozen_storage='fp8': needs mode: lora and frozen_dtype bf16"):
        CogVideoXModule(model="m", mode="full", frozen_dtype="bf16", speed=fp8)
    with pytest.raises(ValueError, match="speed.frozen_storage='fp8'"):
        CogVideoXModule(model="m", mode="lora", frozen_dtype="fp32", speed=fp8)


def test_fp8_storage_refuses_compile_with_checkpointing():
    """The combination that failed on an H200 (CheckpointError at the first backward) is refused up front."""
    with pytest.raises(ValueError, match="does not combine with speed.compile_blocks and speed.gradient_checkpointing"):
        CogVideoXModule(model="m", mode="lora", frozen_dtype="bf16",
                        speed={"frozen_storage": "fp8", "compile_blocks": True, "gradient_checkpointing": True})
