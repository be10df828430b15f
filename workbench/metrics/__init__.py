"""Evaluation metrics: FVD (StyleGAN-V protocol) and frame-averaged CLIP score.

Video convention throughout: float tensors (B, F, C, H, W) with RGB values in [0, 1].
"""

from workbench.metrics.clip_score import (
    VideoCLIPScore,
    clip_frame_scores,
    clip_score_video,
    clip_scores,
    load_clip,
)
from workbench.metrics.frechet import feature_statistics, frechet_distance, sqrtm_psd, trace_sqrt_product
from workbench.metrics.fvd import (
    FrechetVideoDistance,
    ReferenceStatistics,
    fvd_features,
    load_i3d_detector,
    reference_statistics,
    video_to_i3d_input,
)

__all__ = [
    "FrechetVideoDistance",
    "ReferenceStatistics",
    "VideoCLIPScore",
    "clip_frame_scores",
    "clip_score_video",
    "clip_scores",
    "feature_statistics",
    "frechet_distance",
    "fvd_features",
    "load_clip",
    "load_i3d_detector",
    "reference_statistics",
    "sqrtm_psd",
    "trace_sqrt_product",
    "video_to_i3d_input",
]
