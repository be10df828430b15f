"""Train the shapes world's miniature CogVideoX VAE from scratch.

A diffusers ``AutoencoderKLCogVideoX`` at small widths (``VAE_CONFIG``): 17 frames of 64x64 RGB in
[-1, 1] encode to latents (8, 5, 8, 8) and decode back. It is trained on clips of every colour
(yellow included; see ``world``), through the model's own ``encode``/``decode``, i.e. through the
temporal chunking with conv caches that diffusers uses at inference (17 frames are encoded as frames
0-8 then 9-16, 5 latent frames decoded as 0-2 then 3-4; gradients flow through the caches).

Loss: L1 + MSE of the decoded posterior sample, plus ``kl_weight`` times the mean per-element KL of
the posterior. After training, ``scaling_factor`` = 1 / std of posterior samples over
``scale_clips`` training clips (as Stable Diffusion did) is written into the config; ``shift_factor``
stays None. Saved with ``save_pretrained(out_dir, safe_serialization=True)``; ``report.json`` beside
the weights holds the held-out quality.

    workbench shapes make --out B --stages vae         (--vae-steps, --vae-batch)
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from workbench.shapes.augment import (
    ALL_COLOURS,
    Progress,
    autocast,
    generator_for,
    heldout_seed,
    lr_at,
    render_pool,
    resolve_device,
    seed_everything,
    setup_backend,
    train_seed,
    write_report,
)
from workbench.shapes.world import BACKGROUND, COLOURS

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("CogVideoXDownBlock3D",) * 4,
    "up_block_types": ("CogVideoXUpBlock3D",) * 4,
    "block_out_channels": (32, 32, 64, 64),
    "latent_channels": 8,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "temporal_compression_ratio": 4,
    "sample_height": 64,
    "sample_width": 64,
}
LATENT_SHAPE = (8, 5, 8, 8)  # of a 17x64x64 clip
REPORT_NAME = "report.json"


def build_vae(config: dict | None = None):
    from diffusers import AutoencoderKLCogVideoX

    config = dict(VAE_CONFIG if config is None else config)
    for width in config["block_out_channels"]:
        if width % config["norm_num_groups"]:
            raise ValueError(f"norm_num_groups {config['norm_num_groups']} does not divide width {width}")
    return AutoencoderKLCogVideoX(**config)


def _to_model(frames_u8: torch.Tensor) -> torch.Tensor:
    """(B, F, H, W, 3) uint8 -> (B, 3, F, H, W) float in [-1, 1]."""
    return frames_u8.permute(0, 4, 1, 2, 3).float() / 127.5 - 1


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, F, H, W) in [-1, 1] -> (B, F, H, W, 3) uint8 (rounded as the pipeline's videos are)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)


def _kl(posterior) -> torch.Tensor:
    """Mean per-element KL(q || N(0, 1)) (diffusers' ``kl()`` sums over only three of the five dims)."""
    mean, logvar = posterior.mean.float(), posterior.logvar.float()
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


@torch.no_grad()
def latent_scaling_factor(vae, frames_u8: torch.Tensor, batch_size: int, generator: torch.Generator) -> dict:
    """1 / std of posterior samples of the clips, over all elements as Stable Diffusion computed it (and the
    latents' mean, std, mode std and per-channel mean and std, to judge whether a shift would matter)."""
    device = next(vae.parameters()).device
    samples, modes = [], []
    for start in range(0, frames_u8.shape[0], batch_size):
        x = _to_model(frames_u8[start : start + batch_size].to(device))
        post = vae.encode(x).latent_dist
        noise = torch.randn(post.mean.shape, generator=generator, device=device)
        samples.append((post.mean + post.std * noise).float().cpu())
        modes.append(post.mode().float().cpu())
    z, m = torch.cat(samples), torch.cat(modes)
    std = float(z.flatten().std())
    return {"scaling_factor": 1.0 / std, "latent_mean": float(z.mean()), "latent_std": std,
            "latent_mode_std": float(m.flatten().std()),
            "latent_channel_mean": [round(float(v), 4) for v in z.transpose(0, 1).flatten(1).mean(dim=1)],
            "latent_channel_std": [round(float(v), 4) for v in z.transpose(0, 1).flatten(1).std(dim=1)]}


@torch.no_grad()
def evaluate_vae(vae, pool, batch_size: int = 16) -> dict:
    """Held-out reconstruction quality of ``vae.decode(vae.encode(x).latent_dist.mode()).sample``.

    PSNR on [0, 255] of the uint8-rounded reconstruction, per clip then averaged (and per colour); the
    mean reconstructed colour of each palette colour's foreground interior (the clean clip's shape,
    eroded by one pixel, so edges do not count) with the palette colour it is nearest to; and the
    oracle's reading of the reconstructions against the captions.
    """
    from workbench.shapes.oracle import prompt_accuracy

    device = next(vae.parameters()).device
    psnrs, recon_all = [], []
    for start in range(0, len(pool), batch_size):
        clean = pool.frames[start : start + batch_size].to(device)
        rec = vae.decode(vae.encode(_to_model(clean)).latent_dist.mode()).sample
        rec = _to_uint8(rec)
        mse = (rec.float() - clean.float()).pow(2).flatten(1).mean(1)
        psnrs.append((10 * torch.log10(255.0**2 / mse.clamp(min=1e-10))).cpu())
        recon_all.append(rec.cpu())
    psnr = torch.cat(psnrs)
    rec = torch.cat(recon_all)
    clean = pool.frames.cpu()

    bg = torch.tensor(BACKGROUND, dtype=torch.float32)
    fg = (clean.float() - bg).norm(dim=-1) > 60  # (N, F, H, W)
    # erode by one pixel: a pixel is interior when its 3x3 neighbourhood is all foreground
    m = fg.flatten(0, 1).float().unsqueeze(1)
    interior = (-torch.nn.functional.max_pool2d(-m, 3, stride=1, padding=1)).squeeze(1).bool().view_as(fg)

    names = list(COLOURS)
    palette = torch.tensor([COLOURS[n] for n in names], dtype=torch.float32)
    per_colour = {}
    colour_ids = pool.labels[:, 0].cpu()
    for ci, name in enumerate(names):
        sel = colour_ids == ci
        if not sel.any():
            continue
        pix = rec[sel][interior[sel]].float()
        mean_rgb = pix.mean(0) if len(pix) else torch.full((3,), float("nan"))
        nearest = names[int((palette - mean_rgb).norm(dim=1).argmin())] if len(pix) else "none"
        per_colour[name] = {
            "psnr": round(float(psnr[sel].mean()), 3),
            "clips": int(sel.sum()),
            "palette_rgb": list(COLOURS[name]),
            "reconstructed_rgb": [round(float(v), 1) for v in mean_rgb],
            "nearest_palette": nearest,
            "rgb_error": round(float((mean_rgb - palette[ci]).norm()), 2),
        }
    videos = rec.permute(0, 1, 4, 2, 3)  # (N, F, 3, H, W) uint8, the oracle's convention
    acc = prompt_accuracy(list(videos), [s.caption for s in pool.scenes])
    global_mse = (rec.float() - clean.float()).pow(2).mean()
    return {
        "psnr": round(float(psnr.mean()), 3),
        "psnr_min": round(float(psnr.min()), 3),
        "psnr_global": round(float(10 * torch.log10(255.0**2 / global_mse)), 3),
        "per_colour": per_colour,
        "oracle_accuracy": {k: round(v, 4) for k, v in acc.total.items()},
        "num_clips": len(pool),
    }


def train_vae(
    out_dir: str | Path,
    *,
    steps: int,
    batch_size: int,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device | None = None,
    num_clips: int = 4096,
    log_every: int = 50,
    kl_weight: float = 1e-5,
    warmup: int = 50,
    eval_clips: int = 96,
    scale_clips: int = 256,
    eval_batch_size: int = 16,
    grad_clip: float = 1.0,
    bf16: bool = True,
    save_dtype: str = "float32",
    config: dict | None = None,
) -> dict:
    """Train the VAE, save it to ``out_dir`` (diffusers layout) and return the report (also written to
    ``out_dir/report.json``).

    ``num_clips`` training clips are rendered once (every colour, shape and direction); batches of
    ``batch_size`` are drawn with replacement. AdamW (betas 0.9/0.99, no weight decay) with linear
    warm-up over ``warmup`` steps and cosine decay to 5% of ``lr``; gradients clipped at
    ``grad_clip``; bf16 autocast on CUDA (``bf16``). ``eval_clips`` held-out clips (another seed) are
    reconstructed for the report; ``scale_clips`` training clips set ``scaling_factor``.
    ``save_dtype`` "float16"/"bfloat16" halves the file. ``config`` overrides entries of ``VAE_CONFIG``
    (tests use narrower widths to run fast on a CPU).
    """
    t0 = time.perf_counter()
    device = resolve_device(device)
    setup_backend(device)
    seed_everything(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    print(f"[vae] rendering {num_clips} training clips + {eval_clips} held-out clips", flush=True)
    train = render_pool(num_clips, train_seed(seed)).to(device)
    heldout = render_pool(eval_clips, heldout_seed(seed))
    render_s = time.perf_counter() - t0

    vae_config = {**VAE_CONFIG, **(config or {})}
    vae = build_vae(vae_config).to(device).train()
    num_params = sum(p.numel() for p in vae.parameters())
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    index_gen = torch.Generator().manual_seed(seed)
    noise_gen = generator_for(device, seed + 1)
    progress = Progress("vae", steps, log_every)
    print(f"[vae] {num_params:,} parameters, device {device}, {steps} steps of batch {batch_size}", flush=True)

    history = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        idx = torch.randint(len(train), (batch_size,), generator=index_gen)
        x = _to_model(train.frames[idx.to(device)])
        with autocast(device, bf16):
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=noise_gen, device=device)
            rec = vae.decode(z).sample
        rec = rec.float()
        l1 = (rec - x).abs().mean()
        mse = (rec - x).pow(2).mean()
        kl = _kl(post)
        loss = l1 + mse + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(vae.parameters(), grad_clip)
        opt.step()
        if (step + 1) % max(1, log_every) == 0 or step == 0 or step + 1 == steps:
            loss_v, mse_v, kl_v = loss.item(), mse.item(), kl.item()
            psnr = 10 * math.log10(4.0 / max(mse_v, 1e-10))  # [-1, 1] range: peak-to-peak 2
            progress(step, loss=loss_v, l1=l1.item(), kl=kl_v, psnr=psnr, gnorm=gnorm.item(),
                     lr=opt.param_groups[0]["lr"])
            history.append({"step": step + 1, "loss": round(loss_v, 5), "psnr": round(psnr, 3),
                            "kl": round(kl_v, 4), "elapsed_s": round(progress.elapsed(), 2)})
    train_s = progress.elapsed()
    if device.type == "cuda":
        torch.cuda.synchronize()

    vae.eval()
    scale_frames = train.frames[: min(scale_clips, len(train))]
    stats = latent_scaling_factor(vae, scale_frames, eval_batch_size, generator_for(device, seed + 2))
    vae.register_to_config(scaling_factor=stats["scaling_factor"], shift_factor=None)
    quality = evaluate_vae(vae, heldout, eval_batch_size)

    vae.to("cpu")
    if save_dtype != "float32":
        vae.to({"float16": torch.float16, "bfloat16": torch.bfloat16}[save_dtype])
    vae.save_pretrained(out_dir, safe_serialization=True)
    size = sum(f.stat().st_size for f in out_dir.iterdir() if f.is_file() and f.name != REPORT_NAME)
    report = {
        "model": "AutoencoderKLCogVideoX",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vae_config.items()},
        "heldout": quality,
        "psnr": quality["psnr"],
        "latents": stats,
        "scaling_factor": stats["scaling_factor"],
        "num_params": num_params,
        "size_bytes": size,
        "save_dtype": save_dtype,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "kl_weight": kl_weight,
        "seed": seed,
        "num_clips": num_clips,
        "colours": list(ALL_COLOURS),
        "device": str(device),
        "render_seconds": round(render_s, 2),
        "train_seconds": round(train_s, 2),
        "seconds": round(time.perf_counter() - t0, 2),
        "history": history,
    }
    write_report(out_dir / REPORT_NAME, report)
    print(f"[vae] held-out PSNR {quality['psnr']:.2f} dB, scaling_factor {stats['scaling_factor']:.4f}, "
          f"saved to {out_dir} ({size / 1e6:.2f} MB) in {report['seconds']:.0f}s", flush=True)
    return report
