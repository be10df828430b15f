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
tensors in [0, 255] with the same layout are accepted too. Float videos outside
[0, 1] (beyond ``RANGE_TOLERANCE`` of float round-off) are refused, so a [-1, 1]
or [0, 255] float video is never misread.

A second feature space, content-debiased FVD (cd-fvd, VideoMAE-v2 features of
dimension 1408, see ``workbench.metrics.videomae``), is chosen with
``detector_kind="videomae"``; the Frechet computation is the same. Reference
statistics record the feature space (kind, dimension, detector file hash) they
were made in and refuse any other.
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
from workbench.metrics.videomae import VIDEOMAE_FEATURE_DIM, load_videomae_detector

I3D_NUM_FRAMES = 16
I3D_RESOLUTION = 224  # applied inside the detector (resize=True)
I3D_FEATURE_DIM = 400
STYLEGAN_V_DETECTOR_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"
DETECTOR_KWARGS = {"rescale": True, "resize": True, "return_features": True}
PUBLISHED_NUM_VIDEOS = 2048
RANGE_TOLERANCE = 1e-3  # float round-off allowed outside [0, 1]


@dataclass(frozen=True)
class DetectorKind:
    """A feature space for FVD: how its network is called and what it returns by default."""

    name: str
    call_kwargs: dict
    feature_dim: int
    protocol: str


DETECTOR_KINDS = {
    "i3d": DetectorKind("i3d", DETECTOR_KWARGS, I3D_FEATURE_DIM, "stylegan-v-fvd"),
    "videomae": DetectorKind("videomae", {}, VIDEOMAE_FEATURE_DIM, "cd-fvd"),
}


def _kind_spec(name: str) -> DetectorKind:
    """The ``DetectorKind`` called ``name`` ("i3d": StyleGAN-V's FVD; "videomae": cd-fvd)."""
    if name not in DETECTOR_KINDS:
        raise ValueError(f"unknown FVD detector kind {name!r}; choose one of {sorted(DETECTOR_KINDS)}.")
    return DETECTOR_KINDS[name]


def check_unit_range(videos: torch.Tensor, name: str = "videos") -> None:
    """Raise ValueError unless float ``videos`` lie in [0, 1] (up to ``RANGE_TOLERANCE`` of round-off).

    The message names the range found and the conversion that fits it: ``(x + 1) / 2`` for a
    [-1, 1] video, ``x / 255`` for a [0, 255] one.
    """
    if videos.numel() == 0:
        return
    lo, hi = float(videos.min()), float(videos.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} contain NaN or inf values.")
    tol = RANGE_TOLERANCE
    if lo >= -tol and hi <= 1 + tol:
        return
    if hi > 1 + tol and hi <= 255 + tol and lo >= -tol and hi > 2:
        hint = "this looks like [0, 255]: convert with x / 255 (or pass uint8)"
    elif lo < -tol and lo >= -1 - tol and hi <= 1 + tol:
        hint = "this looks like [-1, 1]: convert with (x + 1) / 2"
    else:
        hint = "rescale to [0, 1]: (x + 1) / 2 from [-1, 1], x / 255 from [0, 255]"
    raise ValueError(
        f"float {name} must be in [0, 1] (up to {tol:g} of round-off) but span [{lo:.4g}, {hi:.4g}]; {hint}."
    )


def load_i3d_detector(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load StyleGAN-V's TorchScript I3D detector (``i3d_torchscript.pt``) in eval mode.

    Raises FileNotFoundError (with the download URL) for a missing file and ValueError for a
    file that is not TorchScript (e.g. a VideoMAE-v2 checkpoint: use ``load_detector(..., "videomae")``).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"I3D detector not found at {path}. Download StyleGAN-V's i3d_torchscript.pt from "
            f"{STYLEGAN_V_DETECTOR_URL} and pass its path (for tests, build a stand-in with "
            "workbench.metrics.standins.build_tiny_i3d)."
        )
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError as err:
        raise ValueError(
            f"{path} is not a TorchScript file ({str(err).splitlines()[0][:200]}); StyleGAN-V's i3d_torchscript.pt "
            f"({STYLEGAN_V_DETECTOR_URL}) is. For a VideoMAE-v2 checkpoint (cd-fvd) use detector_kind='videomae'."
        ) from None


def load_detector(path: str | Path, kind: str = "i3d", device: str | torch.device = "cpu") -> torch.nn.Module:
    """The feature network of ``kind`` from a local file, in eval mode.

    "i3d": StyleGAN-V's TorchScript ``i3d_torchscript.pt`` (``load_i3d_detector``);
    "videomae": cd-fvd's VideoMAE-v2 (``workbench.metrics.videomae.load_videomae_detector``).
    """
    _kind_spec(kind)
    if kind == "videomae":
        return load_videomae_detector(path, device)
    return load_i3d_detector(path, device)


def detector_feature_dim(detector: torch.nn.Module, kind: str = "i3d") -> int:
    """The feature dimension a detector declares (its ``feature_dim`` attribute), else its kind's default."""
    dim = getattr(detector, "feature_dim", None)
    if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0:
        return dim
    return _kind_spec(kind).feature_dim


def video_to_i3d_input(videos: torch.Tensor, num_frames: int = I3D_NUM_FRAMES) -> torch.Tensor:
    """Convert workbench videos to the detector input StyleGAN-V (and cd-fvd) feed it.

    Args:
        videos: (B, F, C, H, W), float in [0, 1] or uint8 in [0, 255]; C is 3 (RGB)
            or 1 (repeated to RGB, as StyleGAN-V does). Float values must lie in
            exactly [0, 1], up to ``RANGE_TOLERANCE`` (1e-3) of round-off, which is
            clamped away; anything else (a [-1, 1] video: ``(x + 1) / 2``; a
            [0, 255] float video: ``x / 255``) raises ValueError naming the range
            found and the conversion.
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
        check_unit_range(clip)
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
    detector: torch.nn.Module,
    videos: torch.Tensor,
    batch_size: int = 8,
    num_frames: int = I3D_NUM_FRAMES,
    *,
    detector_kind: str = "i3d",
    feature_dim: int | None = None,
) -> torch.Tensor:
    """Detector features (N, D), float32 on the detector's device, for videos (N, F, C, H, W).

    Videos follow the workbench convention (see ``video_to_i3d_input``); the detector gets
    uint8 (B, 3, num_frames, H, W) and is called with its kind's arguments (I3D:
    ``DETECTOR_KWARGS``; VideoMAE: none). ``feature_dim`` (default: ``detector_feature_dim``,
    400 for StyleGAN-V's I3D) is checked against every batch's output.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    kind, spec = detector_kind, _kind_spec(detector_kind)
    dim = feature_dim if feature_dim is not None else detector_feature_dim(detector, kind)
    device = _detector_device(detector)
    out = []
    for start in range(0, videos.shape[0], batch_size):
        clip = video_to_i3d_input(videos[start : start + batch_size], num_frames).to(device)
        feats = detector(clip, **spec.call_kwargs)
        if not isinstance(feats, torch.Tensor) or feats.shape != (clip.shape[0], dim):
            got = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
            where = (
                f"use StyleGAN-V's i3d_torchscript.pt ({STYLEGAN_V_DETECTOR_URL})"
                if kind == "i3d"
                else "use cd-fvd's VideoMAE-v2 (workbench.metrics.videomae)"
            )
            raise ValueError(
                f"the {kind} detector returned shape {got}, expected ({clip.shape[0]}, {dim}); {where}, "
                "or pass the detector's own feature_dim."
            )
        out.append(feats.float())
    if not out:
        return torch.empty(0, dim, device=device)
    return torch.cat(out)


def _check_sample_count(n: int, which: str, dim: int = I3D_FEATURE_DIM) -> None:
    if n < 2:
        raise ValueError(
            f"FVD needs at least 2 {which} videos for a covariance, got {n}; "
            f"published FVD uses {PUBLISHED_NUM_VIDEOS} per set."
        )
    which = "reference" if which.startswith("real") else which  # one set, one name: "real (reference)" is it
    if n <= dim and (which, n, dim) not in _WARNED:
        _WARNED.add((which, n, dim))  # once a process: the statistics are computed and re-read several times
        warnings.warn(
            f"FVD {which} set has {n} videos <= {dim} feature dims, so its covariance is "
            "rank-deficient and the FVD is not comparable to published numbers "
            f"(StyleGAN-V uses {PUBLISHED_NUM_VIDEOS} videos per set).",
            UserWarning,
            stacklevel=3,
        )


_WARNED: set[tuple[str, int, int]] = set()


@dataclass(frozen=True)
class ReferenceStatistics:
    """Gaussian statistics of real-video features, tied to one feature space.

    The feature space is the detector's kind (``"i3d"``: StyleGAN-V's FVD; ``"videomae"``:
    cd-fvd), its feature dimension (``mu``'s length) and the SHA-256 of its file; with the
    clip length, ``check_compatible`` refuses statistics made in any other.
    """

    mu: np.ndarray
    sigma: np.ndarray
    num_samples: int
    detector_sha256: str
    num_frames: int = I3D_NUM_FRAMES
    detector_kind: str = "i3d"

    @property
    def feature_dim(self) -> int:
        return int(np.shape(self.mu)[0])

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
                "detector_kind": self.detector_kind,
                "feature_dim": str(self.feature_dim),
                "protocol": _kind_spec(self.detector_kind).protocol,
            },
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceStatistics:
        """Read statistics written by ``save`` (files without a kind, from before cd-fvd, are I3D's)."""
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
            stats = cls(
                mu=f.get_tensor("mu"),
                sigma=f.get_tensor("sigma"),
                num_samples=int(meta["num_samples"]),
                detector_sha256=meta["detector_sha256"],
                num_frames=int(meta["num_frames"]),
                detector_kind=meta.get("detector_kind", "i3d"),
            )
        if stats.sigma.shape != (stats.feature_dim, stats.feature_dim) or (
            "feature_dim" in meta and int(meta["feature_dim"]) != stats.feature_dim
        ):
            raise ValueError(f"{path} holds inconsistent statistics (mu {stats.mu.shape}, sigma {stats.sigma.shape}).")
        return stats

    def check_compatible(
        self,
        detector_sha256: str,
        num_frames: int,
        source: str,
        detector_kind: str = "i3d",
        feature_dim: int | None = None,
    ) -> None:
        """Raise ValueError unless these statistics were made in this feature space (detector kind,
        feature dimension, detector file) and with this clip length."""
        if self.detector_kind != detector_kind:
            raise ValueError(
                f"reference statistics {source} were computed in the {self.detector_kind} feature space "
                f"({_kind_spec(self.detector_kind).protocol}), but the detector in use is a {detector_kind} "
                f"({_kind_spec(detector_kind).protocol}); compute reference statistics with this detector."
            )
        if feature_dim is not None and self.feature_dim != feature_dim:
            raise ValueError(
                f"reference statistics {source} hold {self.feature_dim}-dim features, but the detector in use "
                f"returns {feature_dim}; compute reference statistics with this detector."
            )
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
    *,
    detector_kind: str = "i3d",
) -> ReferenceStatistics:
    """Real-video FVD statistics, loaded from ``cache_path`` or computed and cached there.

    Args:
        detector_path: the feature network's file (StyleGAN-V ``i3d_torchscript.pt`` for
            ``detector_kind="i3d"``, a VideoMAE-v2 checkpoint for ``"videomae"``); its kind,
            feature dimension and SHA-256 are stored in the cache and a cache made in another
            feature space is refused.
        videos: (N, F, C, H, W) tensor or an iterable of such batches (workbench
            convention); may be None when the cache already exists.
        cache_path: .safetensors file holding mu, sigma, num_samples and the feature space.
    """
    detector_path, cache_path = Path(detector_path).expanduser(), Path(cache_path)
    if not detector_path.is_file():
        load_detector(detector_path, detector_kind)  # raises the descriptive FileNotFoundError
    sha = file_sha256(detector_path)
    if cache_path.is_file():
        from safetensors import SafetensorError

        try:
            stats = ReferenceStatistics.load(cache_path)
        except (SafetensorError, ValueError, OSError) as e:  # a truncated or overwritten file: derived data, redo it
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if videos is None:
                raise ValueError(f"{cache_path}: the cached FVD reference statistics are unreadable ({reason}); "
                                 "delete the file so they are recomputed from the reference clips") from None
            warnings.warn(f"{cache_path}: the cached FVD reference statistics are unreadable ({reason}); "
                          "recomputing them from the reference clips", UserWarning, stacklevel=2)
        else:
            stats.check_compatible(sha, num_frames, f"in {cache_path}", detector_kind)
            return stats
    if videos is None:
        raise ValueError(f"no cached statistics at {cache_path} and no videos given to compute them.")

    detector = load_detector(detector_path, detector_kind, device)
    dim = detector_feature_dim(detector, detector_kind)
    batches = [videos] if isinstance(videos, torch.Tensor) else videos
    feats = [
        fvd_features(detector, b, batch_size, num_frames, detector_kind=detector_kind, feature_dim=dim).cpu()
        for b in batches
    ]
    features = torch.cat(feats) if feats else torch.empty(0, dim)
    _check_sample_count(features.shape[0], "reference", dim)
    mu, sigma = feature_statistics(features)
    stats = ReferenceStatistics(mu, sigma, int(features.shape[0]), sha, num_frames, detector_kind)
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
    custom extractor with a 4-D image tensor.

    Features are kept as list states (``dist_reduce_fx="cat"``): a distributed
    ``compute()`` gathers every process's features (in rank order) and computes
    the float64 mean and divide-by-N covariance of all of them, so it equals the
    one-process value for the same videos. A process that saw no videos (more
    processes than batches) takes part with a (0, D) tensor. ``features()`` gives
    the per-video features, e.g. for ``workbench.metrics.bootstrap``.

    Args:
        detector_path: the feature network's file: StyleGAN-V ``i3d_torchscript.pt``
            (``detector_kind="i3d"``, the default) or a VideoMAE-v2 checkpoint
            (``"videomae"``: content-debiased FVD, cd-fvd).
        reference: cached real statistics (see ``reference_statistics``), made in the
            same feature space; when given, ``update(..., real=True)`` is refused.
        batch_size: videos per detector call.
        num_frames: clip length (16 for the standard ``fvd2048_16f`` and cd-fvd).
        detector_kind: "i3d" or "videomae".
        feature_dim: the detector's output dimension; default: its ``feature_dim``
            attribute, else the kind's (I3D 400, VideoMAE-v2 ViT-g 1408). Every batch
            is checked against it.
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
        *,
        detector_kind: str = "i3d",
        feature_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        detector = load_detector(detector_path, detector_kind)
        self.detector_kind = detector_kind
        self.feature_dim = feature_dim if feature_dim is not None else detector_feature_dim(detector, detector_kind)
        self.detector_sha256 = file_sha256(Path(detector_path).expanduser())
        if reference is not None:
            reference.check_compatible(
                self.detector_sha256, num_frames, "passed as reference", detector_kind, self.feature_dim
            )
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
        feats = fvd_features(
            self._detector,
            videos,
            self.batch_size,
            self.num_frames,
            detector_kind=self.detector_kind,
            feature_dim=self.feature_dim,
        )
        (self.real_features if real else self.fake_features).append(feats.to(device=self.device, dtype=self.dtype))

    def sync(
        self,
        dist_sync_fn: Any = None,
        process_group: Any = None,
        should_sync: bool = True,
        distributed_available: Any = None,
    ) -> None:
        """torchmetrics' ``sync``, with a process's empty feature lists made (0, D) first.

        torchmetrics stands in a 1-D empty tensor for an empty list state, which cannot be
        all-gathered with other processes' (n, D) features (gloo: "Received data size doesn't
        match"); a (0, D) tensor can, and adds no rows.
        """
        available = distributed_available if distributed_available is not None else self.distributed_available_fn
        if should_sync and callable(available) and available():
            for name in ("real_features", "fake_features"):
                state = getattr(self, name)
                if isinstance(state, list) and not state:
                    empty = torch.empty(0, self.feature_dim, device=self.device, dtype=self.dtype)
                    setattr(self, name, [empty])
        super().sync(dist_sync_fn, process_group, should_sync, distributed_available)

    def _detector_device(self) -> torch.device:
        return _detector_device(self._detector)

    def features(self, real: bool = False) -> torch.Tensor:
        """The per-video features (N, D) accumulated (all processes' after ``sync()``)."""
        state = self.real_features if real else self.fake_features
        if isinstance(state, torch.Tensor):
            return state.reshape(-1, self.feature_dim)
        if not state:
            return torch.empty(0, self.feature_dim, device=self.device, dtype=self.dtype)
        return dim_zero_cat(state).reshape(-1, self.feature_dim)

    def _stats(self, real: bool, which: str) -> tuple[np.ndarray, np.ndarray]:
        feats = self.features(real)
        _check_sample_count(int(feats.shape[0]), which, self.feature_dim)
        return feature_statistics(feats)

    def compute(self) -> torch.Tensor:
        """FVD as a float64 scalar tensor."""
        if self.reference is not None:
            _check_sample_count(self.reference.num_samples, "real (reference)", self.feature_dim)
            mu_real, sigma_real = self.reference.mu, self.reference.sigma
        else:
            mu_real, sigma_real = self._stats(True, "real")
        mu_fake, sigma_fake = self._stats(False, "generated")
        return torch.tensor(frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake), dtype=torch.float64)
