"""Clip pools and augmentation shared by the shapes-world trainers (VAE, detector, CLIP).

A ``ClipPool`` is a set of clips rendered once with numpy (``world.render``) into one uint8 tensor
(N, F, H, W, 3) that is moved to the training device; batches are drawn from it by index, so no
data loader, worker process or disk is involved. Train and held-out pools come from ``SceneSampler``
with different seeds (``train_seed`` / ``heldout_seed``), over every colour, shape and direction.

``augment`` perturbs a batch on the device the way decoded mp4 files and generated videos differ
from clean renders: H.264 yuv420p chroma subsampling (colour smeared across edges), a small gaussian
blur, small noise, brightness/contrast and slight per-channel gain. The per-channel gain is kept to a
few percent so no colour moves towards another palette colour (yellow stays yellow).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from workbench.shapes.world import COLOURS, DIRECTIONS, SHAPES, Scene, SceneSampler, caption, render

NUM_FRAMES = 17
RESOLUTION = 64
ALL_COLOURS = tuple(COLOURS)
DIRECTION_NAMES = tuple(DIRECTIONS)
ATTRIBUTE_VALUES = {"colour": ALL_COLOURS, "shape": SHAPES, "direction": DIRECTION_NAMES}
# SceneSampler's default ranges of the attributes the caption does not name (for normalised targets)
CONTINUOUS = {"size": (0.13, 0.2), "speed": (0.7, 1.0), "offset": (-0.15, 0.15)}


def train_seed(seed: int) -> int:
    """SceneSampler seed of a trainer's training pool."""
    return 1000 + seed


def heldout_seed(seed: int) -> int:
    """SceneSampler seed of a trainer's held-out pool (never equal to a training seed)."""
    return 900_000 + seed


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device; None means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def setup_backend(device: torch.device) -> None:
    """TF32 matmuls/convolutions on CUDA (what the GPU run wants); nothing on CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA, a no-op context elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


@dataclass
class ClipPool:
    """Rendered clips and their labels, on one device.

    ``frames`` (N, F, H, W, 3) uint8; ``labels`` (N, 3) long: indices into ``ATTRIBUTE_VALUES``
    (colour, shape, direction); ``continuous`` (N, 3) float: size, speed, offset scaled to [-1, 1];
    ``caption_ids`` (N,) long: index into ``captions`` (every caption of the world, fixed order).
    """

    frames: torch.Tensor
    labels: torch.Tensor
    continuous: torch.Tensor
    caption_ids: torch.Tensor
    captions: list[str]
    scenes: list[Scene]

    def __len__(self) -> int:
        return self.frames.shape[0]

    def to(self, device: torch.device) -> ClipPool:
        return ClipPool(self.frames.to(device), self.labels.to(device), self.continuous.to(device),
                        self.caption_ids.to(device), self.captions, self.scenes)


def all_captions() -> list[str]:
    """Every caption of the world (all colours), in a fixed order."""
    return [caption(c, s, d) for c in ALL_COLOURS for s in SHAPES for d in DIRECTION_NAMES]


def render_pool(num_clips: int, seed: int, num_frames: int = NUM_FRAMES, resolution: int = RESOLUTION,
                colours: tuple[str, ...] = ALL_COLOURS) -> ClipPool:
    """Render ``num_clips`` scenes of ``SceneSampler(colours, seed=seed)`` into a CPU ``ClipPool``."""
    scenes = SceneSampler(colours=colours, seed=seed).scenes(num_clips)
    frames = np.empty((num_clips, num_frames, resolution, resolution, 3), np.uint8)
    for i, scene in enumerate(scenes):
        frames[i] = render(scene, num_frames, resolution, resolution)
    captions = all_captions()
    index = {c: i for i, c in enumerate(captions)}
    labels = torch.tensor([[ATTRIBUTE_VALUES[k].index(getattr(s, k)) for k in ATTRIBUTE_VALUES] for s in scenes],
                          dtype=torch.long).reshape(num_clips, 3)
    cont = []
    for s in scenes:
        row = []
        for k, (lo, hi) in CONTINUOUS.items():
            row.append(2 * (getattr(s, k) - lo) / (hi - lo) - 1)
        cont.append(row)
    continuous = torch.tensor(cont, dtype=torch.float32).reshape(num_clips, len(CONTINUOUS))
    caption_ids = torch.tensor([index[s.caption] for s in scenes], dtype=torch.long)
    return ClipPool(torch.from_numpy(frames), labels, continuous, caption_ids, captions, scenes)


# ---------------------------------------------------------------------------------------------------
# augmentation (on the device, float frames in [0, 255])

_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable gaussian blur of (N, C, H, W), reflect padding."""
    k = _gaussian_kernel(sigma, images.device)
    c, r = images.shape[1], k.numel() // 2
    x = F.pad(images, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def chroma_subsample(images: torch.Tensor) -> torch.Tensor:
    """What yuv420p does to RGB (N, 3, H, W) in [0, 255]: chroma averaged over 2x2 blocks, brought back
    to full size with bilinear filtering (as decoders upsample it), luma kept."""
    m = _YCBCR.to(images.device, images.dtype)
    ycc = torch.einsum("ij,njhw->nihw", m, images)
    h, w = images.shape[-2:]
    chroma = F.avg_pool2d(ycc[:, 1:], 2, ceil_mode=True)
    chroma = F.interpolate(chroma, size=(h, w), mode="bilinear", align_corners=False)
    ycc = torch.cat([ycc[:, :1], chroma], dim=1)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(m), ycc)


def augment(video: torch.Tensor, generator: torch.Generator, *, chroma_p: float = 0.5, blur_sigma: float = 0.8,
            blur_mix: tuple[float, float] = (0.0, 1.0), noise_std: float = 5.0, brightness: float = 0.12,
            bias: float = 8.0, channel_gain: float = 0.03, quantise: bool = True) -> torch.Tensor:
    """Light, colour-safe augmentation of (B, 3, T, H, W) float frames in [0, 255], per clip.

    Each clip gets (all with independent random strengths, the same for all its frames):
    yuv420p chroma subsampling with probability ``chroma_p``; a gaussian blur of ``blur_sigma`` mixed in
    with a weight uniform in ``blur_mix``; a contrast gain in 1 +- ``brightness`` about mid-grey and an
    offset in +- ``bias``; a per-channel gain in 1 +- ``channel_gain`` (a few percent: no palette colour
    drifts towards another); gaussian noise of std uniform in [0, ``noise_std``]. Then clamped to
    [0, 255] and, with ``quantise``, rounded as uint8 frames would be.
    """
    b, c, t, h, w = video.shape
    dev = video.device

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=dev)

    frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    if chroma_p > 0:
        keep = (u(b) < chroma_p).float().repeat_interleave(t).view(-1, 1, 1, 1)
        frames = frames + keep * (chroma_subsample(frames) - frames)
    if blur_sigma > 0:
        lo, hi = blur_mix
        mix = (lo + (hi - lo) * u(b)).repeat_interleave(t).view(-1, 1, 1, 1)
        frames = frames + mix * (_blur(frames, blur_sigma) - frames)
    x = frames.view(b, t, c, h, w)
    gain = 1 + brightness * (2 * u(b, 1, 1, 1, 1) - 1)
    offset = bias * (2 * u(b, 1, 1, 1, 1) - 1)
    chan = 1 + channel_gain * (2 * u(b, 1, c, 1, 1) - 1)
    x = (x - 127.5) * gain + 127.5 + offset
    x = x * chan
    if noise_std > 0:
        std = noise_std * u(b, 1, 1, 1, 1)
        x = x + std * torch.randn(x.shape, generator=generator, device=dev)
    x = x.clamp(0, 255)
    if quantise:
        x = x.round()
    return x.permute(0, 2, 1, 3, 4)


def mp4_roundtrip(frames: np.ndarray, fps: int = 8) -> np.ndarray:
    """(F, H, W, 3) uint8 through an H.264 yuv420p mp4 (the package's one writer, at the sample data's quality)
    and back."""
    import tempfile

    from workbench.common import read_video, write_video
    from workbench.shapes.sample_dataset import SAMPLE_CRF

    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(Path(tmp) / "clip.mp4", frames, fps, crf=SAMPLE_CRF)
        out = read_video(path)
    return out[: len(frames)]


# ---------------------------------------------------------------------------------------------------
# training helpers


def generator_for(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 5% of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Progress:
    """Prints ``[name] step i/n loss ... elapsed ...`` every ``every`` steps (and the last one)."""

    def __init__(self, name: str, steps: int, every: int) -> None:
        self.name, self.steps, self.every = name, steps, max(1, every)
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, step: int, **values: float) -> None:
        if (step + 1) % self.every and step + 1 != self.steps and step != 0:
            return
        parts = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"[{self.name}] step {step + 1}/{self.steps} {parts} elapsed {self.elapsed():.1f}s", flush=True)


def write_report(path: str | Path, report: dict) -> None:
    Path(path).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
