"""The attention setting (workbench.model.attention): kernel choice and fallback, and the FlashAttention-4
processor's tensor layout, checked on the CPU with a stand-in for the kernel; the kernel itself on a GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workbench.common import UserError
from workbench.model.attention import CogVideoXAttention, Flash4Attention, resolve_attention


def _transformer():
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                       time_embed_dim=16, text_embed_dim=16, num_layers=2, sample_width=4,
                                       sample_height=4, sample_frames=9, max_text_seq_length=8).eval()


def _forward(net) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x, text = torch.randn(2, 3, 4, 4, 4, generator=g), torch.randn(2, 8, 16, generator=g)
    with torch.no_grad():
        return net(hidden_states=x, encoder_hidden_states=text, timestep=torch.tensor([10, 500]),
                   return_dict=False)[0]


def _flash_standin(q, k, v):
    """FlashAttention-4's interface ((B, S, H, D) in, (out, lse) out), computed with SDPA."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2), None


def test_processors_compute_what_diffusers_processor_computes():
    net = _transformer()
    reference = _forward(net)  # diffusers' CogVideoXAttnProcessor2_0
    net.set_attn_processor(CogVideoXAttention())
    torch.testing.assert_close(_forward(net), reference, rtol=0, atol=0)
    net.set_attn_processor(Flash4Attention(flash_fn=_flash_standin))  # the layout around the kernel
    torch.testing.assert_close(_forward(net), reference, rtol=1e-6, atol=1e-6)


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
