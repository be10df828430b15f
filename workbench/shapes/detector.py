"""Train the shapes world's video classifier, the FVD feature network in I3D's place.

``ShapesDetector`` is a small 3D CNN with StyleGAN-V's I3D calling convention (see
``workbench.metrics.fvd``): ``forward(x, rescale=False, resize=False, return_features=False)`` with x
(B, 3, T, H, W) holding values in [0, 255] (uint8 or float); ``rescale`` maps them to [-1, 1],
``resize`` resamples frames to 64x64 (T kept), ``return_features`` returns the (B, 400) values of its
400-d feature layer (pre-activation, as I3D's logits), else class probabilities: the softmaxes of the
colour (4), shape (3) and direction (4) heads concatenated, (B, 11), in the order of
``ATTRIBUTE_VALUES``. Any T >= 8 works (features are pooled over time).

Conv3d x4 (GroupNorm, SiLU; time kept by the first two, halved by the last two) -> mean and max
pooling over (T, H, W) -> Linear -> GELU -> Linear = the 400 features -> GELU -> heads. Besides the
three classification heads, an auxiliary head regresses the scene's size, speed and offset (which the
captions do not name) so that the features also see how a shape is drawn and moves, not only its
class: FVD should notice a generator that gets those wrong.

Trained on 16-frame windows (random temporal offset) of 17-frame clips with ``augment`` (yuv420p
chroma, blur, noise, brightness), exported with ``torch.jit.save(torch.jit.script(model))``.

    workbench shapes make --out B --stages detector    (3,000 steps of batch 64)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.metrics.fvd import I3D_FEATURE_DIM, I3D_NUM_FRAMES
from workbench.shapes.augment import (
    ATTRIBUTE_VALUES,
    CONTINUOUS,
    Progress,
    augment,
    autocast,
    generator_for,
    heldout_seed,
    lr_at,
    mp4_roundtrip,
    render_pool,
    resolve_device,
    seed_everything,
    setup_backend,
    train_seed,
    write_report,
)

RESOLUTION = 64
HEADS = tuple(ATTRIBUTE_VALUES)  # colour, shape, direction
HEAD_SIZES = tuple(len(v) for v in ATTRIBUTE_VALUES.values())  # 4, 3, 4


class ShapesDetector(nn.Module):
    """Video classifier with StyleGAN-V's I3D forward contract (module docstring)."""

    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 48, 96), hidden: int = 256,
                 feature_dim: int = I3D_FEATURE_DIM, resolution: int = RESOLUTION) -> None:
        super().__init__()
        self.resolution = resolution
        c1, c2, c3, c4 = widths
        self.conv1 = nn.Conv3d(3, c1, 3, stride=(1, 2, 2), padding=1)
        self.norm1 = nn.GroupNorm(4, c1)
        self.conv2 = nn.Conv3d(c1, c2, 3, stride=(1, 2, 2), padding=1)
        self.norm2 = nn.GroupNorm(8, c2)
        self.conv3 = nn.Conv3d(c2, c3, 3, stride=2, padding=1)
        self.norm3 = nn.GroupNorm(8, c3)
        self.conv4 = nn.Conv3d(c3, c4, 3, stride=2, padding=1)
        self.norm4 = nn.GroupNorm(8, c4)
        self.fc1 = nn.Linear(2 * c4, hidden)
        self.fc2 = nn.Linear(hidden, feature_dim)
        self.colour = nn.Linear(feature_dim, HEAD_SIZES[0])
        self.shape = nn.Linear(feature_dim, HEAD_SIZES[1])
        self.direction = nn.Linear(feature_dim, HEAD_SIZES[2])
        self.aux = nn.Linear(feature_dim, len(CONTINUOUS))

    def _prepare(self, x: torch.Tensor, rescale: bool, resize: bool) -> torch.Tensor:
        if x.dim() != 5 or x.size(1) != 3:
            raise ValueError("expected input of shape (B, 3, T, H, W)")
        x = x.float()
        if rescale:
            x = x * (2.0 / 255.0) - 1.0
        if resize and (x.size(3) != self.resolution or x.size(4) != self.resolution):
            b, c, t, h, w = x.shape
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
            frames = F.interpolate(frames, size=[self.resolution, self.resolution], mode="bilinear",
                                   align_corners=False, antialias=True)
            x = frames.reshape(b, t, c, self.resolution, self.resolution).permute(0, 2, 1, 3, 4)
        return x

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        h = F.silu(self.norm2(self.conv2(h)))
        h = F.silu(self.norm3(self.conv3(h)))
        h = F.silu(self.norm4(self.conv4(h)))
        pooled = torch.cat([h.mean(dim=[2, 3, 4]), h.amax(dim=[2, 3, 4])], dim=1)
        return self.fc2(F.gelu(self.fc1(pooled)))

    @torch.jit.export
    def logits(self, x: torch.Tensor, rescale: bool = False,
               resize: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features, colour logits, shape logits, direction logits, auxiliary regression)."""
        feats = self._features(self._prepare(x, rescale, resize))
        h = F.gelu(feats)
        return feats, self.colour(h), self.shape(h), self.direction(h), self.aux(h)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        feats, colour, shape, direction, _ = self.logits(x, rescale, resize)
        if return_features:
            return feats
        return torch.cat([colour.softmax(dim=1), shape.softmax(dim=1), direction.softmax(dim=1)], dim=1)


def split_probabilities(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The (B, 11) output of ``forward(..., return_features=False)`` as per-head (B, n) probabilities."""
    return dict(zip(HEADS, probs.split(list(HEAD_SIZES), dim=1)))


def _windows(frames_u8: torch.Tensor, offsets: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B, F, H, W, 3) uint8 + per-clip start frame -> (B, 3, num_frames, H, W) float in [0, 255]."""
    t = offsets.view(-1, 1) + torch.arange(num_frames, device=offsets.device).view(1, -1)
    b = torch.arange(frames_u8.shape[0], device=offsets.device).view(-1, 1)
    return frames_u8[b, t].permute(0, 4, 1, 2, 3).float()


@torch.no_grad()
def _accuracy(module, videos: torch.Tensor, labels: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """Per-head accuracy of ``module`` called as FVD does but for probabilities (uint8 (B,3,T,H,W))."""
    hits = torch.zeros(len(HEADS) + 1)
    for start in range(0, len(videos), batch_size):
        probs = module(videos[start : start + batch_size], rescale=True, resize=True, return_features=False)
        lab = labels[start : start + batch_size]
        ok = torch.stack([p.argmax(1) == lab[:, i] for i, p in enumerate(split_probabilities(probs).values())], 1)
        hits[:-1] += ok.sum(0).float()
        hits[-1] += ok.all(1).sum().float()
    n = len(videos)
    return {k: round(float(v) / n, 4) for k, v in zip((*HEADS, "all"), hits)}


@torch.no_grad()
def _features(module, videos: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    out = [module(videos[s : s + batch_size], rescale=True, resize=True, return_features=True)
           for s in range(0, len(videos), batch_size)]
    return torch.cat(out).double()


def evaluate_detector(module, train_pool, heldout_pool, *, seed: int, mp4_clips: int = 32) -> dict:
    """Held-out accuracy per head of the saved (TorchScript) module, called with StyleGAN-V's kwargs on
    uint8 input of the clips' first 16 frames, as FVD feeds it: on clean clips, augmented clips, clips
    through an H.264 yuv420p mp4 (the package's writer) and clips at 128x128 (``resize``);
    plus FVD (these features, the project's Frechet distance) of held-out clips against training clips,
    and of blurred and frozen (first frame repeated) held-out clips against them: a sanity check
    that the features see quality and motion."""
    from workbench.metrics.frechet import feature_statistics, frechet_distance

    n = I3D_NUM_FRAMES
    labels = heldout_pool.labels
    clean = heldout_pool.frames[:, :n].permute(0, 4, 1, 2, 3).contiguous()  # uint8 (N, 3, 16, H, W)
    g = generator_for(torch.device("cpu"), seed + 7)
    augmented = augment(clean.float(), g).to(torch.uint8)
    upscaled = F.interpolate(clean.float().flatten(1, 2), scale_factor=2, mode="bilinear", align_corners=False)
    upscaled = upscaled.round().clamp(0, 255).to(torch.uint8).view(*clean.shape[:3], 128, 128)
    report = {"clean": _accuracy(module, clean, labels), "augmented": _accuracy(module, augmented, labels),
              "resized_128": _accuracy(module, upscaled[:64], labels[:64]), "mp4": None}
    k = min(mp4_clips, len(clean))
    decoded = [mp4_roundtrip(heldout_pool.frames[i].numpy()) for i in range(k)] if k else []
    if decoded and decoded[0] is not None:
        mp4 = torch.from_numpy(np.stack(decoded))[:, :n].permute(0, 4, 1, 2, 3).contiguous()
        report["mp4"] = _accuracy(module, mp4, labels[:k])
        report["mp4_clips"] = k

    def fvd(a: torch.Tensor, b: torch.Tensor) -> float:
        return round(float(frechet_distance(*feature_statistics(a.numpy()), *feature_statistics(b.numpy()))), 3)

    m = min(len(train_pool), len(clean))
    real = _features(module, train_pool.frames[:m, :n].permute(0, 4, 1, 2, 3).contiguous())
    held = _features(module, clean[:m])
    blurred = augment(clean[:m].float(), g, chroma_p=0, blur_sigma=1.5, blur_mix=(1.0, 1.0), noise_std=0,
                      brightness=0, bias=0, channel_gain=0)
    frozen = clean[:m, :, :1].expand(-1, -1, n, -1, -1).contiguous()
    report["fvd"] = {"num_clips": m, "heldout_vs_train": fvd(held, real),
                     "blurred_vs_train": fvd(_features(module, blurred.to(torch.uint8)), real),
                     "frozen_vs_train": fvd(_features(module, frozen), real)}
    return report


def train_detector(
    out_path: str | Path,
    *,
    steps: int,
    batch_size: int,
    lr: float = 2e-3,
    seed: int = 0,
    device: str | torch.device | None = None,
    num_clips: int = 4096,
    eval_clips: int = 384,
    log_every: int = 100,
    warmup: int = 50,
    weight_decay: float = 0.05,
    aux_weight: float = 0.5,
    bf16: bool = True,
    mp4_clips: int = 32,
    report_path: str | Path | None = None,
) -> dict:
    """Train the detector, save it as TorchScript to ``out_path`` and return the report (also written
    to ``report_path``, default ``out_path`` with suffix ``.json``).

    Batches of 16-frame windows at a random offset of random training clips, augmented on the device;
    loss: cross-entropy of each head + ``aux_weight`` x MSE of the size/speed/offset regression.
    AdamW with warm-up and cosine decay; bf16 autocast on CUDA. ``eval_clips`` held-out clips (another
    seed) measure the saved module; ``mp4_clips`` of them also go through an H.264 mp4 when
    the writer is available (0: skip).
    """
    t0 = time.perf_counter()
    device = resolve_device(device)
    setup_backend(device)
    seed_everything(seed)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    report_path = Path(report_path) if report_path is not None else out_path.with_suffix(".json")

    print(f"[detector] rendering {num_clips} training clips + {eval_clips} held-out clips", flush=True)
    train = render_pool(num_clips, train_seed(seed))
    heldout = render_pool(eval_clips, heldout_seed(seed))
    train_dev = train.to(device)
    render_s = time.perf_counter() - t0

    model = ShapesDetector().to(device).train()
    num_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))
    index_gen = torch.Generator().manual_seed(seed)
    aug_gen = generator_for(device, seed + 1)
    num_frames = I3D_NUM_FRAMES
    max_offset = train.frames.shape[1] - num_frames
    progress = Progress("detector", steps, log_every)
    print(f"[detector] {num_params:,} parameters, device {device}, {steps} steps of batch {batch_size}", flush=True)

    history = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        idx = torch.randint(len(train), (batch_size,), generator=index_gen)
        offsets = torch.randint(max_offset + 1, (batch_size,), generator=index_gen)
        idx_d = idx.to(device)
        x = augment(_windows(train_dev.frames[idx_d], offsets.to(device), num_frames), aug_gen)
        labels = train_dev.labels[idx_d]
        with autocast(device, bf16):
            _, colour, shape, direction, aux = model.logits(x, rescale=True)
        ce = [F.cross_entropy(logit.float(), labels[:, i]) for i, logit in enumerate((colour, shape, direction))]
        reg = F.mse_loss(aux.float(), train_dev.continuous[idx_d])
        loss = sum(ce) + aux_weight * reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % max(1, log_every) == 0 or step == 0 or step + 1 == steps:
            accs = [(logit.argmax(1) == labels[:, i]).float().mean().item()
                    for i, logit in enumerate((colour, shape, direction))]
            values = {"loss": loss.item(), "aux": reg.item(), **{f"acc_{h}": a for h, a in zip(HEADS, accs)}}
            progress(step, **values, lr=opt.param_groups[0]["lr"])
            history.append({"step": step + 1, **{k: round(v, 4) for k, v in values.items()},
                            "elapsed_s": round(progress.elapsed(), 2)})
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = progress.elapsed()

    model.eval().cpu()
    torch.jit.save(torch.jit.script(model), str(out_path))
    module = torch.jit.load(str(out_path)).eval()  # evaluate what was saved
    quality = evaluate_detector(module, train, heldout, seed=seed, mp4_clips=mp4_clips)
    size = out_path.stat().st_size
    report = {
        "model": "ShapesDetector",
        "heldout": quality,
        "accuracy": quality["clean"],
        "feature_dim": I3D_FEATURE_DIM,
        "num_params": num_params,
        "size_bytes": size,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "num_clips": num_clips,
        "eval_clips": eval_clips,
        "device": str(device),
        "render_seconds": round(render_s, 2),
        "train_seconds": round(train_s, 2),
        "seconds": round(time.perf_counter() - t0, 2),
        "history": history,
    }
    write_report(report_path, report)
    print(f"[detector] held-out accuracy {quality['clean']}, saved to {out_path} ({size / 1e6:.2f} MB) "
          f"in {report['seconds']:.0f}s", flush=True)
    return report
