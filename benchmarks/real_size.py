"""Real-size CogVideoX-2B measurements on one GPU (random weights, the real configs).

Side by side in one process, on the same GPU: the plain diffusers + PEFT training step (the
loop of diffusers' examples/cogvideo/train_cogvideox_lora.py: bf16 base weights, fp32 LoRA,
autocast, AdamW) and the workbench's LightningModule step through a Lightning Trainer
(bf16-mixed), from the latent cache and from raw video (VAE + T5 on the device). Also the VAE
encode time per clip and the stock pipeline's seconds per 50-step CFG video.

    python benchmarks/real_size.py --out results.json            # everything (about 6 min on an H100)
    python benchmarks/real_size.py --only lora_cache_ckpt,baseline_lora_ckpt

Model TFLOP/s counts forward + backward as 3x the forward FLOPs (recomputation not counted).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import time
import traceback

import torch

FRAMES, HEIGHT, WIDTH = 49, 480, 720
LATENT = (13, 16, 60, 90)  # F', C, H/8, W/8
TEXT_LEN, TEXT_DIM = 226, 4096


def transformer_forward_flops(cfg, latent_frames=13, h=60, w=90, text_len=TEXT_LEN) -> float:
    """Matmul FLOPs of one transformer forward (2 * MACs), attention included."""
    d = cfg.num_attention_heads * cfg.attention_head_dim
    tokens = latent_frames * (h // cfg.patch_size) * (w // cfg.patch_size) + text_len
    per_layer = 2 * tokens * (4 * d * d)           # q, k, v, out projections
    per_layer += 2 * tokens * (2 * d * 4 * d)      # feed-forward (4x, gelu)
    per_layer += 2 * 2 * tokens * tokens * d       # QK^T and AV
    return cfg.num_layers * per_layer


def build_transformer(dtype):
    from diffusers import CogVideoXTransformer3DModel

    with torch.device("cuda"):
        net = CogVideoXTransformer3DModel()  # the defaults are CogVideoX-2B's config
    return net.to(dtype)


def build_encoders(dtype):
    from diffusers import AutoencoderKLCogVideoX
    from transformers import T5Config, T5EncoderModel

    with torch.device("cuda"):
        vae = AutoencoderKLCogVideoX()  # CogVideoX-2B's VAE config (scaling factor 1.15258426)
        t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                                     num_heads=64, feed_forward_proj="gated-gelu", relative_attention_num_buckets=32))
    return vae.to(dtype).eval().requires_grad_(False), t5.to(dtype).eval().requires_grad_(False)


def scheduler():
    from diffusers import CogVideoXDPMScheduler

    from workbench.model.tiny import COGVIDEOX_2B_SCHEDULER

    return CogVideoXDPMScheduler(**COGVIDEOX_2B_SCHEDULER)


def cleanup():
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def timed(step, n_warmup=2, n=5):
    for _ in range(n_warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def baseline_lora(rank, checkpointing, profile=None):
    """Plain diffusers + PEFT, as diffusers' CogVideoX LoRA example trains.

    ``profile``, if a path, receives a kernel-time summary of one more step (torch.profiler)."""
    from peft import LoraConfig

    from workbench.model.objective import diffusion_loss

    net = build_transformer(torch.bfloat16).requires_grad_(False)
    net.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True,
                               target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    if checkpointing:
        net.enable_gradient_checkpointing()
    net.train()
    opt = torch.optim.AdamW(params, lr=1e-4)
    sched = scheduler()
    lat = torch.randn(1, *LATENT, device="cuda", dtype=torch.bfloat16)
    emb = torch.randn(1, TEXT_LEN, TEXT_DIM, device="cuda", dtype=torch.bfloat16)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = diffusion_loss(net, sched, lat, emb)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    seconds = timed(step)
    if profile:
        with step_profiler() as prof:
            t0 = time.perf_counter()
            step()
            torch.cuda.synchronize()
        write_profile(prof, profile, time.perf_counter() - t0)
    return seconds, net.config


def workbench_step(mode, rank, checkpointing, source, steps=7, fraction=1.0, compile_=False, losses=None,
                   profile=None):
    """The workbench's LightningModule through a Lightning Trainer; median step time over steps 3..N.

    ``losses``, if a list, receives the training loss of every step (for the loss-curve comparison).
    ``profile``, if a path, receives a kernel-time summary of the last step (torch.profiler).
    """
    import lightning as L
    from torch.utils.data import DataLoader, Dataset

    from workbench.train.callbacks import StepStats
    from workbench.train.module import CogVideoXModule
    from workbench.train.guards import NonFiniteGuard
    from workbench.model.loading import CogVideoXComponents
    from workbench.model.tiny import t5_style_tokenizer

    import tempfile
    from pathlib import Path

    on_device = source == "raw"
    vae = t5 = tok = None
    if on_device:
        vae, t5 = build_encoders(torch.bfloat16)
        tok = t5_style_tokenizer(Path(tempfile.mkdtemp()))
    comps = CogVideoXComponents(build_transformer(torch.bfloat16), vae, t5, tok, scheduler())
    module = CogVideoXModule(model="random-real-config", mode=mode, lora_rank=rank, lora_alpha=rank,
                             gradient_checkpointing=checkpointing, checkpoint_fraction=fraction,
                             compile_blocks=compile_, frozen_dtype="bf16",
                             learning_rate=1e-4,
                             encoders="device" if on_device else "offload", warmup_steps=0)
    module.components = comps
    if not on_device:
        module.vae_config = {"scaling_factor": 1.15258426}

    class Synthetic(Dataset):
        def __len__(self):
            return steps

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            if on_device:
                return {"video": torch.rand(3, FRAMES, HEIGHT, WIDTH, generator=g) * 2 - 1, "caption": "a red circle"}
            return {"latent_dist": torch.randn(2 * LATENT[1], LATENT[0], *LATENT[2:], generator=g).bfloat16(),
                    "prompt_embeds": torch.randn(TEXT_LEN, TEXT_DIM, generator=g).bfloat16(), "caption": "x"}

    times = []

    class Timer(L.Callback):
        prof = None

        def on_train_batch_start(self, trainer, *a):
            torch.cuda.synchronize()
            if profile and trainer.global_step == steps - 1:
                self.prof = step_profiler()
                self.prof.start()
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, *a):
            torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)
            if self.prof is not None:
                self.prof.stop()
                write_profile(self.prof, profile, times[-1])
                self.prof = None
            if losses is not None:
                losses.append(float(outputs["loss"]))

    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=1.0, callbacks=[Timer(), StepStats(), NonFiniteGuard()],
                        num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(module, DataLoader(Synthetic(), batch_size=1, num_workers=2))
    steady = sorted(times[2:])
    return steady[len(steady) // 2], comps.transformer.config


def step_profiler():
    """The profiler both step profiles use: host ops and CUDA kernels."""
    return torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                              torch.profiler.ProfilerActivity.CUDA])


def write_profile(prof, path, wall_s):
    """Device time of one step by kernel family, and the top kernels, to ``path`` (text)."""
    families = {"attention": ("flash", "fmha", "cudnn", "attention", "sdpa"),
                "matmul": ("gemm", "xmma", "nvjet", "cutlass", "sm90", "ampere", "mm_"),
                "triton (fused elementwise/norms)": ("triton",), "optimizer": ("adam", "foreach", "multi_tensor"),
                "copy/memset": ("copy", "memset", "memcpy", "fill")}
    totals = dict.fromkeys(list(families) + ["other"], 0.0)
    kernel_rows = []
    for e in prof.key_averages():
        t = e.self_device_time_total
        if t <= 0 or e.device_type != torch.autograd.DeviceType.CUDA:  # kernels only, not the ops launching them
            continue
        if e.key.startswith(("Optimizer.", "ProfilerStep")):  # GPU-side user annotations spanning the step
            continue
        name = e.key.lower()
        fam = next((f for f, keys in families.items() if any(k in name for k in keys)), "other")
        totals[fam] += t / 1e6
        kernel_rows.append((t / 1e6, e.count, e.key[:110], fam))
    kernel_rows.sort(reverse=True)
    busy = sum(totals.values())
    lines = [f"wall {wall_s:.3f} s, device busy {busy:.3f} s ({100 * busy / wall_s:.0f}%)"]
    lines += [f"  {f:34s} {t:7.3f} s {100 * t / wall_s:5.1f}%" for f, t in totals.items()]
    lines += ["", "top kernels (s, calls, name, family):"]
    lines += [f"  {t:7.4f} {n:5d} {k} [{f}]" for t, n, k, f in kernel_rows[:40]]
    open(path, "w").write("\n".join(lines) + "\n")
    prof.export_chrome_trace(str(path) + ".trace.json")
    print("\n".join(lines[:8]), flush=True)


def vae_encode_seconds():
    """Seconds to encode one clip (and no warm-up figure: the pair matches ``pipeline_seconds``)."""
    vae, t5 = build_encoders(torch.bfloat16)
    del t5
    cleanup()
    vae.enable_slicing()
    video = torch.rand(1, 3, FRAMES, HEIGHT, WIDTH, device="cuda", dtype=torch.bfloat16) * 2 - 1
    with torch.no_grad():
        t = timed(lambda: vae.encode(video).latent_dist.parameters, n_warmup=1, n=3)
    return t, None


def pipeline_seconds(steps=50, compile_=False):
    """Seconds per 50-step CFG video of the stock pipeline (``compile_``: with the blocks compiled as
    ``workbench eval/generate --compile`` does), and the seconds of the 2-step warm-up call."""
    from diffusers import CogVideoXPipeline

    from workbench.model.tiny import t5_style_tokenizer

    import tempfile
    from pathlib import Path

    vae, t5 = build_encoders(torch.bfloat16)
    net = build_transformer(torch.bfloat16).eval()
    pipe = CogVideoXPipeline(tokenizer=t5_style_tokenizer(Path(tempfile.mkdtemp())), text_encoder=t5, vae=vae,
                             transformer=net, scheduler=scheduler())
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.enable_slicing()
    pipe.vae.enable_tiling()
    kw = dict(prompt="a red circle", num_frames=FRAMES, height=HEIGHT, width=WIDTH, guidance_scale=6.0,
              generator=torch.Generator("cuda").manual_seed(0), output_type="np")
    if compile_:
        from workbench.model.speed import compile_blocks

        compile_blocks(pipe.transformer)
    t0 = time.perf_counter()
    pipe(num_inference_steps=2, **kw)  # warm-up (and compilation)
    torch.cuda.synchronize()
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe(num_inference_steps=steps, **kw)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, warmup


CASES = {
    "baseline_lora_r128_ckpt": lambda: baseline_lora(128, True),
    "baseline_lora_r128_nockpt": lambda: baseline_lora(128, False),
    "workbench_lora_r128_ckpt_cache": lambda: workbench_step("lora", 128, True, "cache"),
    "workbench_lora_r128_nockpt_cache": lambda: workbench_step("lora", 128, False, "cache"),
    "workbench_lora_r128_ckpt_raw": lambda: workbench_step("lora", 128, True, "raw"),
    "workbench_full_ckpt_cache": lambda: workbench_step("full", 0, True, "cache"),
    "workbench_lora_r128_ckpt_compiled": lambda: workbench_step("lora", 128, True, "cache", steps=8, compile_=True),
    "workbench_lora_r128_ckpt50_compiled": lambda: workbench_step("lora", 128, True, "cache", steps=8, fraction=0.5,
                                                                  compile_=True),
    "workbench_lora_r128_ckpt25_compiled": lambda: workbench_step("lora", 128, True, "cache", steps=8, fraction=0.25,
                                                                  compile_=True),
    "workbench_lora_r128_nockpt_compiled": lambda: workbench_step("lora", 128, False, "cache", steps=8, compile_=True),
    "workbench_full_ckpt_compiled": lambda: workbench_step("full", 0, True, "cache", steps=8, compile_=True),
    "profile_baseline_lora_r128_nockpt": lambda: baseline_lora(128, False, profile="profile_baseline_nockpt.txt"),
    "profile_workbench_lora_r128_nockpt_compiled": lambda: workbench_step(
        "lora", 128, False, "cache", steps=6, compile_=True, profile="profile_lora_nockpt_compiled.txt"),
}


def loss_curves(steps=16):
    """Same seed, same data: the default path (eager, every block checkpointed) vs the A6000 LoRA
    recipe's settings (compiled blocks, no checkpointing)."""
    curves = {}
    for name, kw in (("default", dict(checkpointing=True, compile_=False)),
                     ("optimized", dict(checkpointing=False, compile_=True))):
        cleanup()
        torch.manual_seed(0)
        curves[name] = []
        workbench_step("lora", 128, source="cache", steps=steps, losses=curves[name], **kw)
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated case names (default: all)")
    parser.add_argument("--skip-inference", action="store_true", help="skip the VAE-encode and pipeline timings")
    parser.add_argument("--only-inference", help="comma-separated inference measurements (default: all)")
    parser.add_argument("--out", default="real_size.json")
    parser.add_argument("--cap-gib", type=float, default=None,
                        help="cap the process's GPU memory (48 emulates the A6000) with set_per_process_memory_fraction")
    parser.add_argument("--loss-curves", action="store_true", help="also compare default vs optimized loss curves")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.cap_gib:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib * 2**30 / total))
    names = args.only.split(",") if args.only else list(CASES)
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cap_gib": args.cap_gib}
    rows = []
    for name in names:
        if name not in CASES:
            continue
        cleanup()
        try:
            seconds, cfg = CASES[name]()
            peak = torch.cuda.max_memory_allocated() / 2**30
            tflops = 3 * transformer_forward_flops(cfg) / seconds / 1e12
            results[name] = {"step_s": seconds, "peak_gib": peak, "model_tflops": tflops}
        except Exception as e:  # noqa: BLE001 - record and go on to the next case
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        rows.append(name)
        print(name, results[name], flush=True)
        json.dump(results, open(args.out, "w"), indent=1)
    extra = () if args.skip_inference else (
        ("vae_encode_s_per_clip", vae_encode_seconds),
        ("pipeline_s_per_50step_cfg_video", pipeline_seconds),
        ("pipeline_s_per_50step_cfg_video_compiled", lambda: pipeline_seconds(compile_=True)))
    if args.only_inference:
        extra = [e for e in extra if e[0] in args.only_inference.split(",")]
    for name, fn in extra:
        cleanup()
        try:
            seconds, warmup = fn()
            results[name] = {"seconds": seconds, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
            if warmup is not None:
                results[name]["warmup_2steps_s"] = warmup
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(name, results[name], flush=True)
        json.dump(results, open(args.out, "w"), indent=1)
    if args.loss_curves:
        try:
            results["loss_curves"] = loss_curves()
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            results["loss_curves"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        json.dump(results, open(args.out, "w"), indent=1)
        curves = results["loss_curves"]
        if "error" not in curves:
            for i, (a, b) in enumerate(zip(curves["default"], curves["optimized"])):
                print(f"step {i:2d} loss default {a:.5f} optimized {b:.5f}")
    fwd = transformer_forward_flops(_cfg())
    print(f"\n{results['device']}: one transformer forward = {fwd / 1e12:.0f} TFLOP")
    base = results.get("baseline_lora_r128_ckpt", {}).get("step_s")
    print(f"{'case':36s} {'step s':>8s} {'peak GiB':>9s} {'TFLOP/s':>8s} {'vs base':>8s}")
    for name in rows:
        r = results[name]
        if "error" in r:
            print(f"{name:36s} {r['error'][:60]}")
            continue
        ratio = f"{base / r['step_s']:.2f}x" if base else "-"
        print(f"{name:36s} {r['step_s']:8.3f} {r['peak_gib']:9.1f} {r['model_tflops']:8.0f} {ratio:>8s}")
    json.dump(results, open(args.out, "w"), indent=1)


def _cfg():
    """CogVideoX-2B's transformer shape, for the FLOP count."""
    from types import SimpleNamespace

    return SimpleNamespace(num_attention_heads=30, attention_head_dim=64, patch_size=2, num_layers=30)


if __name__ == "__main__":
    main()
