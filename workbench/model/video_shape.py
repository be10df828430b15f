"""What video shapes CogVideoX takes: 4k+1 frames, sides that are multiples of 16, and its native clip."""

from __future__ import annotations

# CogVideoX's native clip: 49 frames (6 s at 8 fps) at 480x720, the data defaults everywhere.
DEFAULT_NUM_FRAMES, DEFAULT_HEIGHT, DEFAULT_WIDTH, DEFAULT_FPS = 49, 480, 720, 8.0


def check_frame_count(num_frames: int) -> None:
    """CogVideoX's causal VAE needs 4k+1 frames (49 -> 13 latent frames)."""
    if num_frames < 1 or (num_frames - 1) % 4:
        raise ValueError(f"num_frames={num_frames}: CogVideoX needs 4k+1 frames (e.g. 9, 13, 49)")


def check_resolution(height: int, width: int) -> None:
    """H and W must be multiples of 16 (VAE factor 8 x patch size 2)."""
    if height % 16 or width % 16:
        raise ValueError(f"{height}x{width}: height and width must be multiples of 16")
