"""The attention kernel of the CogVideoX transformer: PyTorch SDPA (default) or FlashAttention-4 on Hopper.

``attention: sdpa | flash4 | auto`` (recipe ``model.speed.attention``, ``eval``/``generate --attention``):

* ``sdpa``: diffusers' own ``CogVideoXAttnProcessor2_0``, i.e. ``F.scaled_dot_product_attention``
  (cuDNN's fused kernel on Hopper, FlashAttention-2 or memory-efficient attention elsewhere);
* ``flash4``: the same processor with FlashAttention-4 (``flash-attn-4``, CuTe-DSL kernels; forward and
  backward for SM90+; ``pip install ".[hopper]"``) for the attention call. Exact attention like SDPA; on an
  H200 at CogVideoX-2B's shape (1 x 30 heads x 17,776 tokens x 64) forward + backward 16.4 ms vs 20.6 ms
  (issue "Speed II"). Asking for it where it cannot run (no CUDA, a pre-Hopper GPU such as the A6000, the
  package missing) is an error;
* ``auto``: ``flash4`` where it can run, else ``sdpa`` with a one-line note saying why.

Exports never depend on it: an attention processor is not saved with the weights.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F

from workbench.common import UserError

ATTENTION = ("sdpa", "flash4", "auto")


def flash4_unavailable_reason(device: torch.device | str | None = None) -> str | None:
    """Why FlashAttention-4 cannot run here (None when it can): no CUDA device, a GPU before Hopper (its
    backward kernels need SM90 or newer), or the ``flash-attn-4`` package missing."""
    device = torch.device(device) if device is not None else None
    if (device is not None and device.type != "cuda") or not torch.cuda.is_available():
        return "no CUDA device"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 9:
        return f"this GPU is sm_{major}{minor}; FlashAttention-4 needs Hopper (sm_90) or newer"
    if importlib.util.find_spec("flash_attn") is None or importlib.util.find_spec("flash_attn.cute") is None:
        return "the flash-attn-4 package is not installed (pip install \".[hopper]\")"
    if importlib.util.find_spec("cutlass") is None:
        return "flash-attn-4's nvidia-cutlass-dsl is not importable (its dsl_packages folder is not on the path)"
    return None


def resolve_attention(name: str, device: torch.device | str | None = None) -> tuple[str, str | None]:
    """(the kernel to use, a note for the user or None). ``flash4`` where it cannot run is a UserError."""
    if name not in ATTENTION:
        raise UserError(f"attention={name!r}: choose one of {', '.join(ATTENTION)}")
    if name == "sdpa":
        return "sdpa", None
    reason = flash4_unavailable_reason(device)
    if reason is None:
        return "flash4", None
    if name == "flash4":
        raise UserError(f"attention=flash4: FlashAttention-4 cannot run here ({reason}); use attention: auto "
                        "(falls back to sdpa) or sdpa")
    return "sdpa", f"attention: auto uses PyTorch SDPA ({reason})"


class CogVideoXAttention:
    """diffusers' ``CogVideoXAttnProcessor2_0`` (diffusers 0.42, models/attention_processor.py) with the
    attention call factored out as ``attend(query, key, value)`` on (B, H, S, D) tensors."""

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is not None:  # CogVideoX never passes one; FlashAttention-4 takes none
            raise ValueError("CogVideoXAttention takes no attention mask")
        text_seq_length = encoder_hidden_states.size(1)
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch_size = hidden_states.shape[0]
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            from diffusers.models.embeddings import apply_rotary_emb

            query[:, :, text_seq_length:] = apply_rotary_emb(query[:, :, text_seq_length:], image_rotary_emb)
            if not attn.is_cross_attention:
                key[:, :, text_seq_length:] = apply_rotary_emb(key[:, :, text_seq_length:], image_rotary_emb)
        hidden_states = self.attend(query, key, value)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        encoder_hidden_states, hidden_states = hidden_states.split(
            [text_seq_length, hidden_states.size(1) - text_seq_length], dim=1)
        return hidden_states, encoder_hidden_states


FLASH4_DTYPES = (torch.bfloat16, torch.float16)


def kernel_dtype(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.dtype:
    """The one dtype a fused attention kernel gets q, k and v in, as PyTorch's SDPA gets them.

    Under autocast SDPA is a lower-precision op: autocast casts q, k and v to the autocast dtype before the
    kernel runs. A kernel called directly gets no such cast, and in CogVideoX's blocks the tensors differ:
    ``to_v`` (a Linear) returns bf16 under autocast while ``norm_q``/``norm_k`` (LayerNorm, an fp32 op under
    autocast) return float32. So: the autocast dtype where autocast is on for these tensors' device, else
    their common dtype (a bf16 or fp16 model without autocast: inference).
    """
    device_type = value.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    dtypes = {query.dtype, key.dtype, value.dtype}
    if len(dtypes) > 1:
        raise TypeError(f"attention inputs in {sorted(map(str, dtypes))} outside autocast; the kernel takes one dtype")
    return value.dtype


# FlashAttention-4 as a PyTorch op, ``torch.ops.workbench.flash4_attention`` (forward and backward each an
# opaque custom op over FA4's ``_flash_attn_fwd`` / ``_flash_attn_bwd``, the calls its own FlashAttnFunc makes):
# torch.compile traces through it without a graph break, and selective activation checkpointing
# (workbench.model.speed) can keep its output like SDPA's instead of recomputing it. ``set_flash4_kernels``
# swaps in other (forward, backward) functions (the CPU tests' reference kernels).
_FLASH4_KERNELS: list = []


def set_flash4_kernels(forward: Callable | None, backward: Callable | None = None) -> None:
    """(q, k, v) -> (out, lse) and (q, k, v, out, dout, lse) -> (dq, dk, dv), all (B, S, H, D) but lse (B, H, S)
    float32; None restores FlashAttention-4's."""
    _FLASH4_KERNELS[:] = [] if forward is None else [forward, backward]


def _flash4_kernels():
    if _FLASH4_KERNELS:
        return _FLASH4_KERNELS
    from flash_attn.cute.interface import _flash_attn_bwd, _flash_attn_fwd

    return [lambda q, k, v: _flash_attn_fwd(q, k, v, return_lse=True)[:2],
            lambda q, k, v, out, dout, lse: _flash_attn_bwd(q, k, v, out, dout, lse)[:3]]


def _laid_out_like(t: torch.Tensor, strides_of: torch.Tensor) -> torch.Tensor:
    """``t`` with the strides the op's fake implementation promised (a copy only if the kernel chose others)."""
    return t if t.stride() == strides_of.stride() else torch.empty_like(strides_of).copy_(t)


@torch.library.custom_op("workbench::flash4_attention", mutates_args=())
def flash4_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = _flash4_kernels()[0](q, k, v)
    fake_out, fake_lse = _flash4_attention_fake(q, k, v)
    return _laid_out_like(out, fake_out), _laid_out_like(lse.float(), fake_lse)


@flash4_attention.register_fake
def _flash4_attention_fake(q, k, v):
    b, s, h, _ = q.shape
    return q.new_empty((b, s, h, v.shape[-1])), q.new_empty((b, h, s), dtype=torch.float32)


@torch.library.custom_op("workbench::flash4_attention_backward", mutates_args=())
def flash4_attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                              dout: torch.Tensor, lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv = _flash4_kernels()[1](q, k, v, out, dout, lse)
    return _laid_out_like(dq, q), _laid_out_like(dk, k), _laid_out_like(dv, v)


@flash4_attention_backward.register_fake
def _(q, k, v, out, dout, lse):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _flash4_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs, *output)


def _flash4_backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    return flash4_attention_backward(q, k, v, out, dout, lse)


flash4_attention.register_autograd(_flash4_backward, setup_context=_flash4_setup_context)


class Flash4Attention(CogVideoXAttention):
    """FlashAttention-4 for the attention call, through ``torch.ops.workbench.flash4_attention`` (the environment's
    ``WORKBENCH_FLASH4_OP=0``: FA4's ``flash_attn_func`` called directly, as before the op). ``flash_fn``
    (tests) stands in for ``flash_attn.cute``'s ``flash_attn_func`` instead: (B, S, H, D) tensors of one dtype,
    bf16 or fp16, in; ``(out, lse)`` out."""

    def __init__(self, flash_fn: Callable | None = None):
        if flash_fn is None and os.environ.get("WORKBENCH_FLASH4_OP", "1") == "0":  # FA4's own autograd.Function
            from flash_attn.cute import flash_attn_func as flash_fn
        if flash_fn is None:
            if not _FLASH4_KERNELS:
                import flash_attn.cute  # noqa: F401 - missing here is an error now, not at the first step
            flash_fn = torch.ops.workbench.flash4_attention
        self.flash_fn = flash_fn

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        # FlashAttention-4 asserts one dtype for q, k, v (flash_attn/cute/interface.py, _flash_attn_fwd) and
        # takes bf16/fp16 only; it is not an autocast op, so the cast SDPA gets from autocast is done here.
        dtype = kernel_dtype(query, key, value)
        if dtype not in FLASH4_DTYPES:
            raise TypeError(f"FlashAttention-4 takes bf16 or fp16, and this model computes attention in {dtype}: "
                            "train with precision bf16-mixed (or a bf16 model), or use attention: sdpa")
        query, key, value = (t.to(dtype) for t in (query, key, value))
        # (B, H, S, D) views of CogVideoX's projections; FlashAttention-4 takes (B, S, H, D) and reads the
        # transposed views without a copy (their last dimension is contiguous).
        out = self.flash_fn(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))[0]
        return out.transpose(1, 2)


def set_attention(transformer, name: str, device: torch.device | str | None = None,
                  compute_dtype: torch.dtype | None = None) -> str:
    """Install the attention kernel ``name`` on every block of ``transformer``; returns the one in use (and
    prints the note when ``auto`` falls back).

    ``compute_dtype``: the dtype attention computes in (the autocast dtype of a mixed-precision run; default:
    the transformer's own dtype). FlashAttention-4 takes bf16 or fp16 only, so ``flash4`` with float32 is a
    UserError here rather than an assertion inside the kernel at the first step; ``auto`` then uses SDPA.
    """
    chosen, note = resolve_attention(name, device)
    compute_dtype = compute_dtype or transformer.dtype
    if chosen == "flash4" and compute_dtype not in FLASH4_DTYPES:
        if name == "flash4":
            raise UserError(f"attention=flash4: FlashAttention-4 takes bf16 or fp16 and this model computes in "
                            f"{str(compute_dtype).removeprefix('torch.')}: use precision bf16-mixed (training) or "
                            "dtype bf16 (eval/generate), or attention: sdpa")
        chosen, note = "sdpa", f"attention: auto uses PyTorch SDPA (FlashAttention-4 takes bf16/fp16, not {compute_dtype})"
    if note:
        print(f"[workbench] {note}", flush=True)
    if chosen == "flash4":
        transformer.set_attn_processor(Flash4Attention())
    return chosen
