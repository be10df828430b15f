"""Stand-ins for GPU kernels that keep the real kernel's contract, so a CPU test fails where the GPU would.

``strict_flash_attn_func`` is ``flash_attn.cute.flash_attn_func`` (FlashAttention-4 4.0.0b36,
flash_attn/cute/interface.py ``_flash_attn_fwd`` and ``_validate_head_dims``) computed with PyTorch on the
CPU. It refuses what the real kernel refuses on a Hopper GPU:

* q, k and v of different dtypes (``assert all(t.dtype == v.dtype ...)``: "q, k, v, and qv must have the
  same dtype"); anything but bfloat16 or float16 (fp8 is forward-only and SM100-only; float32 is refused);
* anything but 4-D (batch, seqlen, heads, head_dim) tensors, q/k/v shapes that disagree, a head count of
  q that is not a multiple of k's, head dims outside 8..256 or not multiples of 8 (16-byte alignment);

and, stricter than the real one, a last dimension that is not contiguous (the real kernel silently copies
such an input, which costs a copy of q, k and v every call: a layout regression should fail a test).
The device is the one thing it cannot check: the real kernel also refuses CPU tensors.

It returns ``(out, lse)`` as the real one: ``out`` (B, S, H, D) in the inputs' dtype, ``lse`` (B, H, S)
in float32; gradients flow to q, k and v.
"""

from __future__ import annotations

import math

import torch

FLASH4_DTYPES = (torch.bfloat16, torch.float16)


def _attention(q, k, v, scale: float, causal: bool):
    """Attention on (B, S, H, D) tensors with float32 accumulation: (out in v's dtype, lse in float32)."""
    h, h_k = q.shape[2], k.shape[2]
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))  # (B, H, S, D)
    if h_k != h:
        kf, vf = (t.repeat_interleave(h // h_k, dim=1) for t in (kf, vf))
    scores = qf @ kf.transpose(-1, -2) * scale
    if causal:
        s_q, s_k = q.shape[1], k.shape[1]
        scores = scores.masked_fill(torch.ones(s_q, s_k, dtype=torch.bool).triu(s_k - s_q + 1), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    out = (torch.softmax(scores, dim=-1) @ vf).transpose(1, 2).to(v.dtype)
    return out, lse


class _StrictFlashAttnFunc(torch.autograd.Function):
    """An autograd.Function, as the real ``FlashAttnFunc``: its own backward, nothing traced through it."""

    @staticmethod
    def forward(ctx, q, k, v, scale, causal):
        with torch.no_grad():
            out, lse = _attention(q, k, v, scale, causal)
        ctx.save_for_backward(q, k, v)
        ctx.scale, ctx.causal = scale, causal
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v = (t.detach().requires_grad_(True) for t in ctx.saved_tensors)
        with torch.enable_grad():
            out, _ = _attention(q, k, v, ctx.scale, ctx.causal)
        dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
        return dq, dk, dv, None, None


def strict_flash_attn_func(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax_scale: float | None = None,
                           causal: bool = False, **unsupported):
    if unsupported:
        raise TypeError(f"the stand-in does not model {sorted(unsupported)}")
    assert v.dtype in FLASH4_DTYPES, "inputs must be float16, bfloat16, fp8 e4m3fn, or fp8 e5m2 (fp8: SM100 only)"
    assert all(t.dtype == v.dtype for t in (q, k)), "q, k, v, and qv must have the same dtype"
    assert q.dim() == k.dim() == v.dim() == 4, "q, k, v must be (batch, seqlen, num_heads, head_dim)"
    b, _, h, d = q.shape
    _, s_k, h_k, d_v = v.shape
    assert k.shape == (b, s_k, h_k, d), f"k shape {tuple(k.shape)} != {(b, s_k, h_k, d)}"
    assert h % h_k == 0, "num_head must be divisible by num_head_kv"
    for dim in (d, d_v):
        assert 8 <= dim <= 256 and dim % 8 == 0, (
            f"(head_dim, head_dim_v)=({d}, {d_v}) is not supported on SM90. "
            "head_dim and head_dim_v must be between 8 and 256 and divisible by 8.")
    for name, t in (("q", q), ("k", k), ("v", v)):
        assert t.stride(-1) == 1, f"{name}: the last (head_dim) dimension must be contiguous"
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    return _StrictFlashAttnFunc.apply(q, k, v, scale, causal)


class CudaAutocastLayerNorm(torch.nn.LayerNorm):
    """A LayerNorm that keeps CUDA autocast's policy on any device: computed in, and returning, float32.

    ``layer_norm`` is on CUDA autocast's float32 list, so under ``bf16-mixed`` on a GPU CogVideoX's
    ``norm_q``/``norm_k`` hand float32 q and k to the attention call while v is bf16. CPU autocast returns
    bf16 there, which hid the FlashAttention-4 dtype crash from every CPU test.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            w = None if self.weight is None else self.weight.float()
            b = None if self.bias is None else self.bias.float()
            return torch.nn.functional.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)


def with_cuda_autocast_norms(transformer) -> None:
    """Give every attention block's q/k norms CUDA autocast's float32 policy (in place)."""
    for block in transformer.transformer_blocks:
        for name in ("norm_q", "norm_k"):
            norm = getattr(block.attn1, name)
            if isinstance(norm, torch.nn.LayerNorm):
                norm.__class__ = CudaAutocastLayerNorm


def reference_flash4_forward(q, k, v):
    """The FlashAttention-4 forward the op ``workbench::flash4_attention`` calls (``_flash_attn_fwd``), in PyTorch
    on the CPU, with the strict stand-in's checks: (out (B, S, H, D) in v's dtype, lse (B, H, S) float32)."""
    strict_flash_attn_func(q, k, v)  # refuses what the real kernel refuses
    return _attention(q, k, v, 1.0 / math.sqrt(q.shape[-1]), False)


def reference_flash4_backward(q, k, v, out, dout, lse):
    """The FlashAttention-4 backward (``_flash_attn_bwd``) from the saved (out, lse), as the kernel computes it:
    P = exp(S - lse), dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)), dQ = dS K scale, dK = dS^T Q scale."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    qf, kf, vf, of, dof = (t.float().transpose(1, 2) for t in (q, k, v, out, dout))  # (B, H, S, D)
    p = torch.exp(qf @ kf.transpose(-1, -2) * scale - lse.unsqueeze(-1))
    dv = p.transpose(-1, -2) @ dof
    ds = p * (dof @ vf.transpose(-1, -2) - (dof * of).sum(-1, keepdim=True))
    dq, dk = ds @ kf * scale, ds.transpose(-1, -2) @ qf * scale
    return tuple(g.transpose(1, 2).to(t.dtype) for g, t in ((dq, q), (dk, k), (dv, v)))
