"""Evaluation metrics: FVD (StyleGAN-V protocol; cd-fvd's VideoMAE-v2 feature space as an
option), frame-averaged CLIP score, and bootstrap confidence intervals for both.

Video convention throughout: float tensors (B, F, C, H, W) with RGB values in [0, 1].
"""

from workbench.metrics.bootstrap import (
    BootstrapInterval,
    bootstrap_difference,
    bootstrap_fvd,
    bootstrap_fvd_difference,
    bootstrap_mean,
    pair_by_key,
)
from workbench.metrics.clip_score import (
    VideoCLIPScore,
    clip_frame_scores,
    clip_score_video,
    clip_scores,
    load_clip,
)
from workbench.metrics.frechet import feature_statistics, frechet_distance, sqrtm_psd, trace_sqrt_product
from workbench.metrics.fvd import (
    DETECTOR_KINDS,
    FrechetVideoDistance,
    ReferenceStatistics,
    check_unit_range,
    detector_feature_dim,
    fvd_features,
    load_detector,
    load_i3d_detector,
    reference_statistics,
    video_to_i3d_input,
)
from workbench.metrics.videomae import VideoMAEFeatures, load_videomae_detector

__all__ = [
    "DETECTOR_KINDS",
    "BootstrapInterval",
    "FrechetVideoDistance",
    "ReferenceStatistics",
    "VideoCLIPScore",
    "VideoMAEFeatures",
    "bootstrap_difference",
    "bootstrap_fvd",
    "bootstrap_fvd_difference",
    "bootstrap_mean",
    "check_unit_range",
    "clip_frame_scores",
    "clip_score_video",
    "clip_scores",
    "detector_feature_dim",
    "feature_statistics",
    "frechet_distance",
    "fvd_features",
    "load_clip",
    "load_detector",
    "load_i3d_detector",
    "load_videomae_detector",
    "pair_by_key",
    "reference_statistics",
    "sqrtm_psd",
    "trace_sqrt_product",
    "video_to_i3d_input",
]
