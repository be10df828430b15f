"""The clip rules every CogVideoX family shares (4k+1 frames, sides that are multiples of 16), for checks made
before a model is loaded; each family's own rules and native clip: workbench.model.families."""

from __future__ import annotations


def check_frame_count(num_frames: int) -> None:
    """CogVideoX's causal VAE needs 4k+1 frames (49 -> 13 latent frames)."""
    if num_frames < 1 or (num_frames - 1) % 4:
        raise ValueError(f"num_frames={num_frames}: CogVideoX needs 4k+1 frames (e.g. 9, 13, 49)")


def check_resolution(height: int, width: int) -> None:
    """H and W must be multiples of 16 (VAE factor 8 x patch size 2)."""
    if height % 16 or width % 16:
        raise ValueError(f"{height}x{width}: height and width must be multiples of 16")
