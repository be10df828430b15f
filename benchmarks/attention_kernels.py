"""Attention kernels at CogVideoX-2B's training shape: which one is fastest on this GPU?

One attention call of the 2B transformer at 49x480x720: batch 1, 30 heads of 64, 17,776 video +
226 text tokens, bf16, no mask. Times forward and forward+backward for every PyTorch SDPA backend
that runs here (and flex_attention compiled), checks each against the math backend in float32,
and prints model TFLOP/s (forward 4*S^2*D, backward 2.5x forward, as FlashAttention counts).

    python benchmarks/attention_kernels.py [--seq 18002] [--out attention.json]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"default": None, "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def bench(fn, reps=10):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return sorted(times)[len(times) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=17776 + 226)
    p.add_argument("--heads", type=int, default=30)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--out", default="attention.json")
    a = p.parse_args()
    B, H, S, D = 1, a.heads, a.seq, a.head_dim
    fwd_flops = 4 * B * H * S * S * D
    torch.manual_seed(0)
    # diffusers' processor hands SDPA (B, H, S, D) views of (B, S, H, D) projections
    q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
               for _ in range(3))
    do = torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel(SDPBackend.MATH):
        sub = 2048  # float32 reference on a slice of the queries (the full S^2 matrix is 39 GB)
        ref = F.scaled_dot_product_attention(q[:, :, :sub].float(), k.float(), v.float())
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "cudnn": torch.backends.cudnn.version(), "shape": [B, H, S, D]}

    def attn_sdpa(backend):
        def run(q, k, v):
            if backend is None:
                return F.scaled_dot_product_attention(q, k, v)
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v)
        return run

    candidates = {name: attn_sdpa(b) for name, b in BACKENDS.items()}
    try:
        from torch.nn.attention.flex_attention import flex_attention

        candidates["flex_compiled"] = torch.compile(flex_attention, dynamic=False)
    except Exception as e:  # noqa: BLE001
        results["flex_compiled"] = {"error": repr(e)[:200]}

    # Memory layouts: diffusers' processor gives SDPA (B, H, S, D) views of (B, S, H, D) projections
    # ("bshd"); in eager mode its q/k LayerNorm returns q and k contiguous in (B, H, S, D) ("qk_bhsd").
    qc, kc, vc = (t.detach().contiguous().requires_grad_() for t in (q, k, v))
    layouts = {"bshd": (q, k, v), "qk_bhsd": (qc, kc, v), "bhsd": (qc, kc, vc)}
    for layout, (lq, lk, lv) in layouts.items():
        if layout != "bshd":
            candidates[f"default_{layout}"] = (lambda lq, lk, lv: lambda *_: F.scaled_dot_product_attention(lq, lk, lv))(lq, lk, lv)

    candidates["default_bshd_again"] = candidates["default"]  # drift check: the first row, timed last

    def grads_reset():
        for t in (q, k, v, qc, kc, vc):
            t.grad = None

    for name, fn in candidates.items():
        try:
            out = fn(q, k, v)
            err = ((out[:, :, :sub].float() - ref).norm() / ref.norm()).item()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                fn(q, k, v).backward(do)
                torch.cuda.synchronize()
            kernels = sorted({e.key[:80] for e in prof.key_averages() if e.device_time_total > 1000})
            t_f = bench(lambda: fn(q, k, v))

            def fb():
                grads_reset()
                fn(q, k, v).backward(do)
            t_fb = bench(fb)
            results[name] = {"fwd_ms": t_f * 1e3, "fwd_bwd_ms": t_fb * 1e3, "rel_err": err,
                             "fwd_tflops": fwd_flops / t_f / 1e12, "fwd_bwd_tflops": 3.5 * fwd_flops / t_fb / 1e12,
                             "kernels": kernels}
        except Exception as e:  # noqa: BLE001
            results[name] = {"error": repr(e)[:300]}
        print(name, json.dumps(results[name]), flush=True)
    json.dump(results, open(a.out, "w"), indent=1)
    print(f"\n{results['device']} torch {results['torch']} cudnn {results['cudnn']} shape {results['shape']}")
    print(f"{'kernel':16s} {'fwd ms':>8s} {'TFLOP/s':>8s} {'f+b ms':>8s} {'TFLOP/s':>8s} {'rel err':>8s}")
    for name in candidates:
        r = results[name]
        if "error" in r:
            print(f"{name:16s} {r['error'][:90]}")
        else:
            print(f"{name:16s} {r['fwd_ms']:8.2f} {r['fwd_tflops']:8.0f} {r['fwd_bwd_ms']:8.2f} "
                  f"{r['fwd_bwd_tflops']:8.0f} {r['rel_err']:8.1e}")
    print(f"x30 layers, f+b of the best: {30 * min(r['fwd_bwd_ms'] for r in results.values() if isinstance(r, dict) and 'fwd_bwd_ms' in r):.0f} ms per training step")


if __name__ == "__main__":
    main()
