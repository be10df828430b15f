"""The attention setting (workbench.model.attention): kernel choice and fallback, and the FlashAttention-4
processor's tensor layout, checked on the CPU with a stand-in for the kernel; the kernel itself on a GPU."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.kernels import strict_flash_attn_func, with_cuda_autocast_norms
from workbench.common import UserError
from workbench.model import attention as attention_module
from workbench.model.attention import CogVideoXAttention, Flash4Attention, resolve_attention, set_attention


def _transformer():
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                       time_embed_dim=16, text_embed_dim=16, num_layers=2, sample_width=4,
                                       sample_height=4, sample_frames=9, max_text_seq_length=8).eval()


def _forward(net) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x, text = torch.randn(2, 3, 4, 4, 4, generator=g), torch.randn(2, 8, 16, generator=g)
    x, text = x.to(net.dtype), text.to(net.dtype)
    with torch.no_grad():
        return net(hidden_states=x, encoder_hidden_states=text, timestep=torch.tensor([10, 500]),
                   return_dict=False)[0]


def test_processors_compute_what_diffusers_processor_computes():
    net = _transformer()
    reference = _forward(net)  # diffusers' CogVideoXAttnProcessor2_0
    net.set_attn_processor(CogVideoXAttention())
    torch.testing.assert_close(_forward(net), reference, rtol=0, atol=0)


def test_flash4_layout_matches_sdpa_in_a_bf16_model():
    """Inference as eval/generate run it: a bf16 pipeline, no autocast; the kernel gets (B, S, H, D)."""
    net = _transformer().to(torch.bfloat16)
    reference = _forward(net)
    net.set_attn_processor(Flash4Attention(flash_fn=strict_flash_attn_func))
    torch.testing.assert_close(_forward(net), reference, rtol=2e-2, atol=2e-2)


def _lora(net):
    from peft import LoraConfig

    net.requires_grad_(False).to(torch.bfloat16)
    net.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                               target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    for p in net.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # fp32 LoRA over bf16 base weights, as CogVideoXModule trains
    return net


def _autocast_step(net) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One bf16-autocast forward + backward, as Lightning's bf16-mixed runs the training step."""
    g = torch.Generator().manual_seed(1)
    x, text = torch.randn(2, 3, 4, 4, 4, generator=g), torch.randn(2, 8, 16, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(hidden_states=x, encoder_hidden_states=text, timestep=torch.tensor([10, 500]),
                  return_dict=False)[0]
    loss = out.float().pow(2).mean()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in net.parameters() if p.requires_grad]


@pytest.mark.parametrize("mode", ["lora", "full"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_flash4_training_step_under_autocast(mode, compiled):
    """Under bf16 autocast the blocks' q/k norms return float32 (CUDA's policy) while v is bf16; the
    processor must give the kernel one dtype, as autocast gives SDPA. With the strict stand-in the old
    processor fails here exactly as FlashAttention-4 failed at the first real step."""
    results = []
    for processor in (CogVideoXAttention(), Flash4Attention(flash_fn=strict_flash_attn_func)):
        net = _transformer().train()
        with_cuda_autocast_norms(net)
        net = _lora(net) if mode == "lora" else net.requires_grad_(True)
        net.set_attn_processor(processor)
        if compiled:  # as compile_blocks does, with a backend that needs no C++ compiler
            for block in net.transformer_blocks:
                block.compile(backend="aot_eager", dynamic=False)
        results.append(_autocast_step(net))
    (loss_sdpa, grads_sdpa), (loss_flash, grads_flash) = results
    torch.testing.assert_close(loss_flash, loss_sdpa, rtol=1e-2, atol=1e-4)
    for a, b in zip(grads_flash, grads_sdpa):
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-3)


def test_strict_standin_refuses_what_flashattention4_refuses():
    q = torch.randn(1, 16, 2, 8, dtype=torch.bfloat16)
    strict_flash_attn_func(q, q, q)
    with pytest.raises(AssertionError, match="same dtype"):
        strict_flash_attn_func(q.float(), q, q)
    with pytest.raises(AssertionError, match="float16, bfloat16"):
        strict_flash_attn_func(q.float(), q.float(), q.float())
    with pytest.raises(AssertionError, match="head_dim"):
        strict_flash_attn_func(q[..., :6], q[..., :6], q[..., :6])
    with pytest.raises(AssertionError, match="contiguous"):
        t = q.transpose(-1, -2).contiguous().transpose(-1, -2)
        strict_flash_attn_func(t, t, t)


def test_flash4_outside_autocast_in_float32_is_refused_before_the_kernel():
    net = _transformer()
    net.set_attn_processor(Flash4Attention(flash_fn=strict_flash_attn_func))
    with pytest.raises(TypeError, match="FlashAttention-4 takes bf16 or fp16"):
        _forward(net)


def test_flash4_with_float32_compute_is_a_user_error(monkeypatch):
    monkeypatch.setattr(attention_module, "flash4_unavailable_reason", lambda device=None: None)
    net = _transformer()
    with pytest.raises(UserError, match="attention=flash4: FlashAttention-4 takes bf16 or fp16 and this model "
                                        "computes in float32: use precision bf16-mixed"):
        set_attention(net, "flash4", "cuda")
    assert set_attention(net, "auto", "cuda") == "sdpa"  # auto falls back, saying why


def test_kernel_choice_and_fallback_without_hopper():
    assert resolve_attention("sdpa", "cpu") == ("sdpa", None)
    chosen, note = resolve_attention("auto", "cpu")
    assert chosen == "sdpa" and "no CUDA device" in note
    with pytest.raises(UserError, match=r"attention=flash4: FlashAttention-4 cannot run here \(no CUDA device\)"):
        resolve_attention("flash4", "cpu")
    with pytest.raises(UserError, match="choose one of sdpa, flash4, auto"):
        resolve_attention("flash3", "cpu")


def test_generate_with_flash4_on_a_cpu_is_one_line(tiny_model_dir, tmp_path, capsys):
    from workbench.cli import main

    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "x", "--out", str(tmp_path / "x.mp4"),
                 "--device", "cpu", "--attention", "flash4", "--steps", "1", "--frames", "9", "--height", "64",
                 "--width", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: attention=flash4: FlashAttention-4 cannot run here")


@pytest.mark.gpu
def test_flash4_matches_sdpa_on_a_hopper_gpu():
    from workbench.model.attention import flash4_unavailable_reason

    if not torch.cuda.is_available() or flash4_unavailable_reason("cuda"):
        pytest.skip(f"FlashAttention-4 cannot run here: {flash4_unavailable_reason('cuda')}")
    net = _transformer().cuda().to(torch.bfloat16)
    g = torch.Generator("cuda").manual_seed(1)
    x = torch.randn(2, 3, 4, 4, 4, generator=g, device="cuda", dtype=torch.bfloat16)
    text = torch.randn(2, 8, 16, generator=g, device="cuda", dtype=torch.bfloat16)
    t = torch.tensor([10, 500], device="cuda")
    with torch.no_grad():
        reference = net(hidden_states=x, encoder_hidden_states=text, timestep=t, return_dict=False)[0]
        net.set_attn_processor(Flash4Attention())
        out = net(hidden_states=x, encoder_hidden_states=text, timestep=t, return_dict=False)[0]
    torch.testing.assert_close(out.float(), reference.float(), rtol=2e-2, atol=2e-2)
