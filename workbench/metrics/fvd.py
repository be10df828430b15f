"""Frechet Video Distance with StyleGAN-V's I3D detector.

Protocol followed: StyleGAN-V (github.com/universome/stylegan-v)
``src/metrics/frechet_video_distance.py`` and ``src/metrics/metric_utils.py``:

* detector: the TorchScript Kinetics-400 I3D ``i3d_torchscript.pt``, a port of the
  tf.hub model used by the original TensorFlow FVD;
* call: ``detector(x, rescale=True, resize=True, return_features=True)`` with
  ``x`` a uint8 tensor of shape (B, 3, T, H, W) in [0, 255]. The detector itself
  maps [0, 255] to [-1, 1] and resizes every frame to 224x224, and returns the
  400-dim pre-softmax features;
* clips: 16 consecutive frames per video (``fvd2048_16f``); generated videos are
  quantised with ``(x * 127.5 + 128).clamp(0, 255).to(uint8)`` from [-1, 1];
* statistics: float64 mean and divide-by-N covariance; 2048 videos per set.

Workbench video convention: float tensors (B, F, C, H, W) with values in [0, 1]
(C = 3, RGB), as decoded/generated videos come out of the pipeline. uint8
tensors in [0, 255] with the same layout are accepted too.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from workbench.common import file_sha256
from workbench.metrics.frechet import feature_statistics, frechet_distance

I3D_NUM_FRAMES = 16
I3D_RESOLUTION = 224  # applied inside the detector (resize=True)
I3D_FEATURE_DIM = 400
STYLEGAN_V_DETECTOR_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"
DETECTOR_KWARGS = {"rescale": True, "resize": True, "return_features": True}
PUBLISHED_NUM_VIDEOS = 2048


def load_i3d_detector(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load StyleGAN-V's TorchScript I3D detector (``i3d_torchscript.pt``) in eval mode."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"I3D detector not found at {path}. Download StyleGAN-V's i3d_torchscript.pt from "
            f"{STYLEGAN_V_DETECTOR_URL} and pass its path (for tests, build a stand-in with "
            "workbench.metrics.standins.build_tiny_i3d)."
        )
    return torch.jit.load(str(path), map_location=device).eval()


def video_to_i3d_input(videos: torch.Tensor, num_frames: int = I3D_NUM_FRAMES) -> torch.Tensor:
    """Convert workbench videos to the detector input StyleGAN-V feeds it.

    Args:
        videos: (B, F, C, H, W), float in [0, 1] or uint8 in [0, 255]; C is 3 (RGB)
            or 1 (repeated to RGB, as StyleGAN-V does).
        num_frames: clip length; the first ``num_frames`` frames are used, as for
            StyleGAN-V's generated videos (its real-video loader picks a random
            16-frame window instead; pre-slice real videos for that behaviour).

    Returns:
        uint8 tensor (B, 3, num_frames, H, W). Resizing to 224x224 and scaling to
        [-1, 1] are left to the detector (``resize=True, rescale=True``), exactly
        as in StyleGAN-V, so this function does not resample.
    """
    if not isinstance(videos, torch.Tensor) or videos.ndim != 5:
        shape = tuple(videos.shape) if isinstance(videos, torch.Tensor) else type(videos).__name__
        raise ValueError(f"videos must be a tensor of shape (B, F, C, H, W), got {shape}.")
    if videos.shape[2] not in (1, 3):
        raise ValueError(
            f"videos must be (B, F, C, H, W) with C in (1, 3), got shape {tuple(videos.shape)}; "
            "permute (B, C, F, H, W) inputs first."
        )
    if videos.shape[1] < num_frames:
        raise ValueError(
            f"FVD needs clips of {num_frames} frames but the videos have {videos.shape[1]}; "
            "generate or load longer videos (StyleGAN-V discards shorter ones)."
        )
    clip = videos[:, :num_frames]
    if clip.dtype != torch.uint8:
        if not clip.is_floating_point():
            raise ValueError(f"videos must be float in [0, 1] or uint8, got dtype {clip.dtype}.")
        lo, hi = float(clip.min()), float(clip.max())
        if lo < -0.5 or hi > 1.5:
            raise ValueError(
                f"float videos must be in [0, 1] but span [{lo:.3g}, {hi:.3g}]; convert from "
                "[-1, 1] with (x + 1) / 2 or from [0, 255] with x / 255."
            )
        # Same rounding as StyleGAN-V's (x * 127.5 + 128).to(uint8) for x in [-1, 1].
        clip = (clip.float() * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    if clip.shape[2] == 1:
        clip = clip.expand(-1, -1, 3, -1, -1)
    return clip.permute(0, 2, 1, 3, 4).contiguous()


def _detector_device(detector: torch.nn.Module) -> torch.device:
    for p in detector.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def fvd_features(
    detector: torch.nn.Module, videos: torch.Tensor, batch_size: int = 8, num_frames: int = I3D_NUM_FRAMES
) -> torch.Tensor:
    """I3D features (N, 400), float32 on the detector's device, for videos (N, F, C, H, W).

    Videos follow the workbench convention (see ``video_to_i3d_input``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    device = _detector_device(detector)
    out = []
    for start in range(0, videos.shape[0], batch_size):
        clip = video_to_i3d_input(videos[start : start + batch_size], num_frames).to(device)
        feats = detector(clip, **DETECTOR_KWARGS)
        if feats.ndim != 2 or feats.shape != (clip.shape[0], I3D_FEATURE_DIM):
            raise ValueError(
                f"the detector returned shape {tuple(feats.shape)}, expected ({clip.shape[0]}, "
                f"{I3D_FEATURE_DIM}); use StyleGAN-V's i3d_torchscript.pt ({STYLEGAN_V_DETECTOR_URL})."
            )
        out.append(feats.float())
    if not out:
        return torch.empty(0, I3D_FEATURE_DIM, device=device)
    return torch.cat(out)


def _check_sample_count(n: int, which: str, dim: int = I3D_FEATURE_DIM) -> None:
    if n < 2:
        raise ValueError(
            f"FVD needs at least 2 {which} videos for a covariance, got {n}; "
            f"published FVD uses {PUBLISHED_NUM_VIDEOS} per set."
        )
    if n <= dim:
        warnings.warn(
            f"FVD {which} set has {n} videos <= {dim} feature dims, so its covariance is "
            "rank-deficient and the FVD is not comparable to published numbers "
            f"(StyleGAN-V uses {PUBLISHED_NUM_VIDEOS} videos per set).",
            UserWarning,
            stacklevel=3,
        )


@dataclass(frozen=True)
class ReferenceStatistics:
    """Gaussian statistics of real-video I3D features, tied to one detector file."""

    mu: np.ndarray
    sigma: np.ndarray
    num_samples: int
    detector_sha256: str
    num_frames: int = I3D_NUM_FRAMES

    def save(self, path: str | Path) -> None:
        """Write to a .safetensors file (atomically; no pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(
            {"mu": np.ascontiguousarray(self.mu, np.float64), "sigma": np.ascontiguousarray(self.sigma, np.float64)},
            str(tmp),
            metadata={
                "num_samples": str(self.num_samples),
                "detector_sha256": self.detector_sha256,
                "num_frames": str(self.num_frames),
                "protocol": "stylegan-v-fvd",
            },
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceStatistics:
        """Read statistics written by ``save``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"reference statistics file {path} does not exist.")
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            missing = {"num_samples", "detector_sha256", "num_frames"} - meta.keys()
            if missing or set(f.keys()) != {"mu", "sigma"}:
                raise ValueError(
                    f"{path} is not an FVD reference-statistics file (missing {sorted(missing)} or "
                    "mu/sigma); delete it so it is recomputed."
                )
            return cls(
                mu=f.get_tensor("mu"),
                sigma=f.get_tensor("sigma"),
                num_samples=int(meta["num_samples"]),
                detector_sha256=meta["detector_sha256"],
                num_frames=int(meta["num_frames"]),
            )

    def check_compatible(self, detector_sha256: str, num_frames: int, source: str) -> None:
        """Raise ValueError unless these statistics were made with this detector and clip length."""
        if self.detector_sha256 != detector_sha256:
            raise ValueError(
                f"reference statistics {source} were computed with a detector of sha256 "
                f"{self.detector_sha256[:12]}..., but the detector in use has sha256 {detector_sha256[:12]}...; "
                "delete the cache to recompute it with this detector, or use the matching detector."
            )
        if self.num_frames != num_frames:
            raise ValueError(
                f"reference statistics {source} use {self.num_frames}-frame clips, not {num_frames}; "
                "delete the cache to recompute it."
            )


def reference_statistics(
    detector_path: str | Path,
    videos: torch.Tensor | Iterable[torch.Tensor] | None,
    cache_path: str | Path,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    num_frames: int = I3D_NUM_FRAMES,
) -> ReferenceStatistics:
    """Real-video FVD statistics, loaded from ``cache_path`` or computed and cached there.

    Args:
        detector_path: StyleGAN-V ``i3d_torchscript.pt``; its SHA-256 is stored in
            the cache and a cache made with another detector is refused.
        videos: (N, F, C, H, W) tensor or an iterable of such batches (workbench
            convention); may be None when the cache already exists.
        cache_path: .safetensors file holding mu, sigma, num_samples, detector hash.
    """
    detector_path, cache_path = Path(detector_path).expanduser(), Path(cache_path)
    if not detector_path.is_file():
        load_i3d_detector(detector_path)  # raises the descriptive FileNotFoundError
    sha = file_sha256(detector_path)
    if cache_path.is_file():
        stats = ReferenceStatistics.load(cache_path)
        stats.check_compatible(sha, num_frames, f"in {cache_path}")
        return stats
    if videos is None:
        raise ValueError(f"no cached statistics at {cache_path} and no videos given to compute them.")

    detector = load_i3d_detector(detector_path, device)
    batches = [videos] if isinstance(videos, torch.Tensor) else videos
    feats = [fvd_features(detector, b, batch_size, num_frames).cpu() for b in batches]
    features = torch.cat(feats) if feats else torch.empty(0, I3D_FEATURE_DIM)
    _check_sample_count(features.shape[0], "reference")
    mu, sigma = feature_statistics(features)
    stats = ReferenceStatistics(mu, sigma, int(features.shape[0]), sha, num_frames)
    stats.save(cache_path)
    return stats


class FrechetVideoDistance(Metric):
    """FVD between real and generated videos (StyleGAN-V protocol), as a torchmetrics Metric.

    Call ``update(videos, real=...)`` with workbench videos (B, F, C, H, W) in [0, 1]
    and ``compute()`` for the float64 FVD. ``forward``/``__call__`` would compute a
    per-batch FVD, which is meaningless here; use ``update`` and ``compute``.

    torchmetrics' FrechetInceptionDistance is not reused: it accumulates an
    unbiased (N - 1) covariance where StyleGAN-V uses divide-by-N, returns the
    float32 feature dtype, cannot take cached real statistics, and probes a
    custom extractor with a 4-D image tensor. Features are kept as list states
    (``dist_reduce_fx="cat"``) so distributed sync gathers them.

    Args:
        detector_path: StyleGAN-V ``i3d_torchscript.pt``.
        reference: cached real statistics (see ``reference_statistics``); when
            given, ``update(..., real=True)`` is refused.
        batch_size: videos per detector call.
        num_frames: clip length (16 for the standard ``fvd2048_16f``).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(
        self,
        detector_path: str | Path,
        reference: ReferenceStatistics | None = None,
        batch_size: int = 8,
        num_frames: int = I3D_NUM_FRAMES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        detector = load_i3d_detector(detector_path)
        self.detector_sha256 = file_sha256(Path(detector_path).expanduser())
        if reference is not None:
            reference.check_compatible(self.detector_sha256, num_frames, "passed as reference")
        # Kept out of the module tree so the detector's weights never land in
        # checkpoints of a LightningModule holding this metric; it follows the
        # inputs' device in update().
        object.__setattr__(self, "_detector", detector)
        self.reference = reference
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.add_state("real_features", default=[], dist_reduce_fx="cat")
        self.add_state("fake_features", default=[], dist_reduce_fx="cat")

    def update(self, videos: torch.Tensor, real: bool) -> None:
        """Add a batch of videos (B, F, C, H, W) in [0, 1] to the real or generated set."""
        if real and self.reference is not None:
            raise ValueError("this FVD metric uses cached reference statistics; do not update it with real videos.")
        if self._detector_device() != videos.device:
            object.__setattr__(self, "_detector", self._detector.to(videos.device))
        feats = fvd_features(self._detector, videos, self.batch_size, self.num_frames)
        (self.real_features if real else self.fake_features).append(feats)

    def _detector_device(self) -> torch.device:
        return _detector_device(self._detector)

    def _stats(self, features: list[torch.Tensor] | torch.Tensor, which: str) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(features, torch.Tensor):
            feats = features
        else:
            feats = dim_zero_cat(features) if features else torch.empty(0, I3D_FEATURE_DIM)
        _check_sample_count(int(feats.shape[0]), which)
        return feature_statistics(feats)

    def compute(self) -> torch.Tensor:
        """FVD as a float64 scalar tensor."""
        if self.reference is not None:
            _check_sample_count(self.reference.num_samples, "real (reference)")
            mu_real, sigma_real = self.reference.mu, self.reference.sigma
        else:
            mu_real, sigma_real = self._stats(self.real_features, "real")
        mu_fake, sigma_fake = self._stats(self.fake_features, "generated")
        return torch.tensor(frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake), dtype=torch.float64)
