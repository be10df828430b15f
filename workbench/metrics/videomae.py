"""VideoMAE-v2 features for content-debiased FVD (cd-fvd; Ge et al., CVPR 2024).

Protocol followed: github.com/songweige/content-debiased-fvd (``cdfvd/fvd.py``,
``cdfvd/third_party/VideoMAEv2/{utils,videomaev2_finetune}.py``), also on PyPI as ``cd-fvd``:

* network: VideoMAE-v2 ViT-g/14 (``vit_g_hybrid_pt_1200e_ssv2_ft.pth``: self-supervised on
  UnlabeledHybrid, fine-tuned on Something-Something-v2): patch 14, tubelet 2, width 1408,
  40 blocks of 16 heads, MLP 6144, LayerNorm eps 1e-6, fixed sine-cosine position table,
  no class token;
* preprocessing, exactly cd-fvd's ``preprocess_videomae``: uint8 -> float32 / 255 (values in
  [0, 1]; **no** ImageNet mean/std), every frame resized to 224x224 with
  ``F.interpolate(mode="bilinear", align_corners=False)`` (no antialias, no crop: other aspect
  ratios are squashed), 16-frame clips;
* features: ``forward_features``, the mean over all tokens after the last block followed by
  ``fc_norm``: 1408 values per video (the 174-way SSv2 head is not used);
* statistics: as StyleGAN-V's (float64 mean, divide-by-N covariance), so
  ``workbench.metrics.fvd`` computes cd-fvd with this network as its detector.

Workbench float videos in [0, 1] reach the network as uint8 rounded from ``x * 255``
(``video_to_i3d_input``, as for I3D); cd-fvd's own video loader truncates ``x * 255`` instead,
at most one grey level apart, and identical for videos given as uint8 (decoded files).

The weights are read from a LOCAL file only (nothing is downloaded): cd-fvd's ``.pth``
checkpoint (read with ``torch.load(weights_only=True)``), a ``.safetensors`` state dict with the
same keys, or a TorchScript file whose ``forward(x)`` takes uint8 videos (B, 3, T, H, W) and
returns (B, D) features. Every form is returned as a module with that calling convention
(``VideoMAEFeatures`` for the state dicts), which is what ``FrechetVideoDistance(...,
detector_kind="videomae")`` calls.

The attention is computed as cd-fvd writes it (``softmax(q * scale @ k^T) @ v``), op for op, so
features agree with cd-fvd's up to the float round-off of the BLAS in use.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

VIDEOMAE_NUM_FRAMES = 16
VIDEOMAE_RESOLUTION = 224
VIDEOMAE_FEATURE_DIM = 1408
CDFVD_CHECKPOINT_NAME = "vit_g_hybrid_pt_1200e_ssv2_ft.pth"
CDFVD_CHECKPOINT_URL = (
    "https://huggingface.co/OpenGVLab/InternVideoMAE_models/resolve/main/mae-g/vit_g_hybrid_pt_1200e_ssv2_ft.pth"
)
CONFIG_METADATA_KEY = "videomae_config"
# Heads are not visible in a state dict's shapes; the VideoMAE-v2 widths' standard head counts.
_HEADS_BY_WIDTH = {384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}


@dataclass(frozen=True)
class VideoMAEConfig:
    """Shape of a VideoMAE-v2 ViT (defaults: cd-fvd's ViT-g/14)."""

    embed_dim: int = VIDEOMAE_FEATURE_DIM
    depth: int = 40
    num_heads: int = 16
    mlp_hidden_dim: int = 6144  # int(1408 * 48 / 11)
    patch_size: int = 14
    tubelet_size: int = 2
    img_size: int = VIDEOMAE_RESOLUTION
    all_frames: int = VIDEOMAE_NUM_FRAMES
    num_classes: int = 174  # the SSv2 head: in the checkpoint, unused for features
    qkv_bias: bool = True
    norm_eps: float = 1e-6

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VideoMAEConfig:
        return cls(**json.loads(text))


def sinusoid_table(n_position: int, d_hid: int) -> torch.Tensor:
    """VideoMAE's fixed position table (1, n_position, d_hid), computed as it does (NumPy float64 -> float32)."""
    hid = np.arange(d_hid)
    angles = np.arange(n_position)[:, None] / np.power(10000, 2 * (hid // 2) / d_hid)[None, :]
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return torch.tensor(angles, dtype=torch.float).unsqueeze(0)


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, head_dim * num_heads * 3, bias=False)
        # q and v biases, k bias zero (VideoMAE-v2 / BEiT convention); kept as zero-size when absent
        # so that the module scripts without Optional parameters.
        n = head_dim * num_heads if qkv_bias else 0
        self.q_bias = nn.Parameter(torch.zeros(n))
        self.v_bias = nn.Parameter(torch.zeros(n))
        self.proj = nn.Linear(head_dim * num_heads, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        if self.q_bias.numel() > 0:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
            qkv = F.linear(x, self.qkv.weight, bias)
        else:
            qkv = F.linear(x, self.qkv.weight)
        qkv = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, -1)
        return self.proj(x)


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, cfg: VideoMAEConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = _Attention(cfg.embed_dim, cfg.num_heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mlp = _Mlp(cfg.embed_dim, cfg.mlp_hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: VideoMAEConfig) -> None:
        super().__init__()
        p, t = cfg.patch_size, cfg.tubelet_size
        self.img_size = cfg.img_size
        self.proj = nn.Conv3d(3, cfg.embed_dim, kernel_size=(t, p, p), stride=(t, p, p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(3) != self.img_size or x.size(4) != self.img_size:
            raise ValueError("VideoMAE input frames must be img_size x img_size")
        return self.proj(x).flatten(2).transpose(1, 2)


class VideoMAEv2(nn.Module):
    """VideoMAE-v2 ``VisionTransformer`` (mean pooling + ``fc_norm``), state-dict compatible with cd-fvd's.

    ``forward_features(x)`` takes float (B, 3, T, img_size, img_size) and returns (B, embed_dim);
    ``forward`` adds the classification head.
    """

    def __init__(self, cfg: VideoMAEConfig = VideoMAEConfig()) -> None:
        super().__init__()
        self.embed_dim = cfg.embed_dim
        self.tubelet_size = cfg.tubelet_size
        self.grid = cfg.img_size // cfg.patch_size
        self.grid_t = cfg.all_frames // cfg.tubelet_size
        self.patch_embed = _PatchEmbed(cfg)
        # A fixed table, not a parameter (and not in cd-fvd's state dict).
        table = sinusoid_table(self.grid_t * self.grid * self.grid, cfg.embed_dim)
        self.register_buffer("pos_embed", table, persistent=False)
        self.blocks = nn.ModuleList([_Block(cfg) for _ in range(cfg.depth)])
        self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()

    def interpolate_pos_encoding(self, t: int) -> torch.Tensor:
        """cd-fvd's temporal interpolation of the position table for clips of ``t`` != all_frames frames."""
        t0 = t // self.tubelet_size
        if t0 == self.grid_t:
            return self.pos_embed
        dim = self.pos_embed.shape[-1]
        grid = self.pos_embed.permute(0, 2, 1).reshape(1, dim, self.grid_t, self.grid, self.grid)
        scale = (float(t0) + 0.1) / float(self.grid_t)  # + 0.1 as cd-fvd (after DINO) against round-off
        grid = F.interpolate(grid, scale_factor=[scale, 1.0, 1.0], mode="trilinear")
        return grid.reshape(1, dim, -1).permute(0, 2, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        B, T = x.size(0), x.size(2)
        x = self.patch_embed(x)
        x = x + self.interpolate_pos_encoding(T).expand(B, -1, -1).type_as(x).to(x.device)
        for blk in self.blocks:
            x = blk(x)
        return self.fc_norm(x.mean(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


class VideoMAEFeatures(nn.Module):
    """cd-fvd's feature extractor with the FVD detector calling convention.

    ``forward(x)``: x uint8 (B, 3, T, H, W) in [0, 255] (float in [0, 255] is accepted too), T
    even -> float (B, D) features: ``x / 255`` (float32), each frame bilinearly resized to
    224x224 (``align_corners=False``, no antialias), no mean/std normalisation, then
    ``VideoMAEv2.forward_features`` (token mean -> ``fc_norm``). Identical numerics to cd-fvd's
    ``preprocess_videomae`` followed by ``model.forward_features``.
    """

    def __init__(self, vit: VideoMAEv2, img_size: int = VIDEOMAE_RESOLUTION) -> None:
        super().__init__()
        self.vit = vit
        self.img_size = img_size
        self.feature_dim = vit.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.size(1) != 3:
            raise ValueError("expected uint8 videos of shape (B, 3, T, H, W)")
        B, C, T, H, W = x.shape
        s = self.img_size
        x = x.to(torch.float32) / 255
        x = x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)
        x = F.interpolate(x, size=[s, s], mode="bilinear", align_corners=False)
        x = x.reshape(B, T, C, s, s).permute(0, 2, 1, 3, 4)
        x = x.to(self.vit.patch_embed.proj.weight.dtype)
        return self.vit.forward_features(x)


def config_from_state_dict(state: dict[str, torch.Tensor], num_heads: int | None = None) -> VideoMAEConfig:
    """The ``VideoMAEConfig`` a VideoMAE-v2 state dict was made with (heads: ``num_heads`` or by width)."""
    try:
        w = state["patch_embed.proj.weight"]  # (E, 3, t, p, p)
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
        if "fc_norm.weight" not in state:
            raise KeyError("fc_norm.weight")
    except (KeyError, ValueError) as err:
        raise ValueError(
            f"not a VideoMAE-v2 (mean-pooling) state dict: missing {err}; expected cd-fvd's {CDFVD_CHECKPOINT_NAME} "
            "or a state dict with the same keys."
        ) from None
    embed_dim, tubelet, patch = int(w.shape[0]), int(w.shape[2]), int(w.shape[3])
    if num_heads is None:
        if embed_dim not in _HEADS_BY_WIDTH:
            raise ValueError(
                f"cannot tell the number of attention heads of a width-{embed_dim} VideoMAE; pass num_heads."
            )
        num_heads = _HEADS_BY_WIDTH[embed_dim]
    head = state.get("head.weight")
    return VideoMAEConfig(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_hidden_dim=int(hidden),
        patch_size=patch,
        tubelet_size=tubelet,
        num_classes=0 if head is None else int(head.shape[0]),
        qkv_bias="blocks.0.attn.q_bias" in state,
    )


def build_videomae_features(
    state: dict[str, torch.Tensor], config: VideoMAEConfig | None = None, num_heads: int | None = None
) -> VideoMAEFeatures:
    """``VideoMAEFeatures`` (eval mode) with ``state`` loaded strictly into its ViT."""
    if config is None:
        config = config_from_state_dict(state, num_heads)
    elif num_heads is not None:
        config = replace(config, num_heads=num_heads)
    vit = VideoMAEv2(config)
    if config.qkv_bias is False:  # zero-size placeholders are not in such state dicts
        state = {**state, **{k: v for k, v in vit.state_dict().items() if k.endswith(("q_bias", "v_bias"))}}
    result = vit.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"state dict does not match a VideoMAE-v2 {config}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}."
        )
    return VideoMAEFeatures(vit).eval()


def is_torchscript_file(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (zip with ``code/``), not a ``torch.save`` checkpoint."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def load_videomae_detector(
    path: str | Path, device: str | torch.device = "cpu", *, num_heads: int | None = None
) -> nn.Module:
    """Load a VideoMAE-v2 feature network from a local file, in eval mode, on ``device``.

    Accepted files:

    * cd-fvd's checkpoint ``vit_g_hybrid_pt_1200e_ssv2_ft.pth`` (or any ``torch.save`` of a
      VideoMAE-v2 state dict, optionally under ``"model"``/``"module"``), read with
      ``weights_only=True``;
    * a ``.safetensors`` state dict with the same keys (its metadata may hold the
      ``VideoMAEConfig`` as JSON under ``"videomae_config"``);
    * a TorchScript file whose ``forward(x_uint8 (B, 3, T, H, W)) -> (B, D)`` does its own
      preprocessing (e.g. ``torch.jit.script(VideoMAEFeatures(...))``).

    The shape is read from the state dict (the heads from ``num_heads``, the saved config, or the
    standard count for the width). Returns a module ``forward(x_uint8_BCTHW) -> (B, D)`` whose
    ``feature_dim`` attribute is D. Nothing is downloaded.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"VideoMAE-v2 checkpoint not found at {path}. cd-fvd's features need {CDFVD_CHECKPOINT_NAME} "
            f"(VideoMAE-v2 ViT-g, SSv2 fine-tuned; {CDFVD_CHECKPOINT_URL}); download it yourself and pass its path "
            "(for tests, build a stand-in with workbench.metrics.standins.build_tiny_videomae)."
        )
    if is_torchscript_file(path):
        return torch.jit.load(str(path), map_location=device).eval()
    config = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if CONFIG_METADATA_KEY in meta:
            config = VideoMAEConfig.from_json(meta[CONFIG_METADATA_KEY])
        state: Any = load_file(str(path))
    else:
        try:
            mmap = zipfile.is_zipfile(path)  # memory-map the 4 GB ViT-g rather than read it twice
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as err:  # pickle content outside the weights-only allow-list
            raise ValueError(
                f"{path} could not be read as a weights-only checkpoint ({type(err).__name__}: {err}). Convert it "
                "once, from a copy you trust, to safetensors (the state dict under 'model') and pass that file."
            ) from None
        if isinstance(state, dict):
            if isinstance(state.get(CONFIG_METADATA_KEY), str):
                config = VideoMAEConfig.from_json(state[CONFIG_METADATA_KEY])
            for key in ("model", "module"):
                if isinstance(state.get(key), dict):
                    state = state[key]
                    break
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__}).")
    model = build_videomae_features(state, config, num_heads)
    return model.to(device)
