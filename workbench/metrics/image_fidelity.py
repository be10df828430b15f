"""How faithfully an image-to-video model's video starts from and keeps its conditioning image.

Per video, against the conditioning image as the model received it (resized to the clip by the pipeline's own
``VideoProcessor``, ``conditioning_image_tensor``):

- ``first_frame_psnr``: PSNR (dB, data range 1) of the first generated frame; 100 dB at most (an identical
  frame would be infinite, which results.json cannot hold);
- ``first_frame_ssim``: SSIM of the first frame (torchmetrics, Gaussian 11x11 window, sigma 1.5);
- ``clip_image``: the image's CLIP similarity to every frame, ``100 * max(cos, 0)`` averaged over the frames
  (CLIP score's convention, image against image): how much of the image the video keeps.

PSNR and SSIM are torchmetrics' functional metrics; CLIP is the suite's CLIP model (the same one as the CLIP
score). Suites with ``images:`` report them beside CLIP score and FVD, with bootstrap intervals over videos.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

MAX_PSNR_DB = 100.0
NAMES = ("first_frame_psnr", "first_frame_ssim", "clip_image")


def conditioning_image_tensor(image, height: int, width: int) -> torch.Tensor:
    """A PIL image (or path) as the I2V pipeline feeds it: resized to ``height`` x ``width`` by diffusers'
    ``VideoProcessor.preprocess`` (CogVideoXImageToVideoPipeline's ``video_processor``), returned as (C, H, W)
    float in [0, 1]."""
    from diffusers.video_processor import VideoProcessor

    pixels = VideoProcessor(vae_scale_factor=8).preprocess(image, height=height, width=width)  # (1, C, H, W) in [-1, 1]
    return ((pixels[0].float() + 1) / 2).clamp(0, 1)


def _check(videos: torch.Tensor, images: torch.Tensor) -> None:
    if not isinstance(videos, torch.Tensor) or videos.ndim != 5 or videos.shape[2] != 3:
        raise ValueError(f"videos must be (B, F, 3, H, W) in [0, 1], got {getattr(videos, 'shape', type(videos))}")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) in [0, 1], got {getattr(images, 'shape', type(images))}")
    if videos.shape[0] != images.shape[0]:
        raise ValueError(f"{videos.shape[0]} videos but {images.shape[0]} images; pass one image per video")
    if videos.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"videos are {tuple(videos.shape[-2:])} but images {tuple(images.shape[-2:])}: resize the "
                         "images to the clip first (conditioning_image_tensor), as the pipeline does")
    for name, t in (("videos", videos), ("images", images)):
        if not t.is_floating_point() or t.min() < -1e-3 or t.max() > 1 + 1e-3:
            raise ValueError(f"{name} must be float in [0, 1]")


def first_frame_psnr_ssim(videos: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per video (B,): PSNR (dB, capped at ``MAX_PSNR_DB``) and SSIM of the first frame against its image."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    _check(videos, images)
    first, target = videos[:, 0].float().clamp(0, 1), images.float().clamp(0, 1)
    psnr = peak_signal_noise_ratio(first, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(first, target, data_range=1.0, reduction="none")
    return psnr.clamp(max=MAX_PSNR_DB).nan_to_num(MAX_PSNR_DB), ssim


@torch.no_grad()
def clip_image_similarity(clip: Any, videos: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per video (B,): ``100 * max(cos, 0)`` between the image's CLIP embedding and each frame's, averaged over
    frames. ``clip`` is anything with ``.model`` and ``.processor`` (a ``VideoCLIPScore``)."""
    from workbench.metrics.clip_score import _frames_uint8, _model_device

    _check(videos, images)
    device = _model_device(clip.model)
    out = []
    for video, image in zip(videos, images):
        frames = torch.cat([image[None], video]).clamp(0, 1)
        pixels = clip.processor(images=[f.cpu() for f in _frames_uint8(frames)], return_tensors="pt")["pixel_values"]
        emb = clip.model.get_image_features(pixels.to(device)).float()
        cos = torch.nn.functional.cosine_similarity(emb[:1], emb[1:], dim=-1)
        out.append(100 * cos.clamp(min=0).mean())
    return torch.stack(out).cpu() if out else torch.empty(0)


class ImageFidelity(Metric):
    """First-frame PSNR and SSIM and CLIP image similarity of image-to-video outputs, as a torchmetrics Metric.

    ``update(videos (B, F, 3, H, W), images (B, 3, H, W))``, both in [0, 1] at the clip's size; ``per_video()``
    returns ``{name: (N,)}`` and ``compute()`` the means. ``clip``: an object with ``.model`` and ``.processor``
    (the suite's ``VideoCLIPScore``), None to leave ``clip_image`` out. List states (``cat``): they gather
    across processes as the CLIP score's do.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, clip: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        object.__setattr__(self, "clip", clip)  # not a submodule: CLIP's weights stay out of state_dicts
        for name in self.names:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    @property
    def names(self) -> tuple[str, ...]:
        return NAMES if self.clip is not None else NAMES[:2]

    def update(self, videos: torch.Tensor, images: torch.Tensor) -> None:
        psnr, ssim = first_frame_psnr_ssim(videos, images)
        getattr(self, "first_frame_psnr").append(psnr.to(self.device, self.dtype))
        getattr(self, "first_frame_ssim").append(ssim.to(self.device, self.dtype))
        if self.clip is not None:
            getattr(self, "clip_image").append(clip_image_similarity(self.clip, videos, images).to(self.device,
                                                                                                  self.dtype))

    def per_video(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in self.names:
            state = getattr(self, name)
            out[name] = (state if isinstance(state, torch.Tensor) else
                         dim_zero_cat(state) if state else torch.empty(0, device=self.device))
        return out

    def compute(self) -> dict[str, torch.Tensor]:
        values = self.per_video()
        if values["first_frame_psnr"].numel() == 0:
            raise ValueError("ImageFidelity has no videos; call update() first.")
        return {name: v.mean() for name, v in values.items()}
