"""Framing pictures to a clip's size: one policy for training clips, conditioning images and first-frame scoring.

``resize_crop``: scale to cover the target size keeping the aspect ratio (bilinear, antialiased), then crop the
centre. It frames every training clip (workbench.data.video) and every conditioning image of an image-to-video
model. ``prepare_image`` is that framing of one image, rounded to 8 bits: training reads the image through it
(workbench.data.dataset), and every sampling path hands the stock ``CogVideoXImageToVideoPipeline`` the image it
returns. The pipeline's ``VideoProcessor.preprocess(image, height, width)`` *stretches* an image to the clip
(PIL resize, aspect not kept); given one already at the clip's size, PIL's resize returns it unchanged, so the
pipeline samples from exactly the pixels training conditioned on. (The released I2V models were trained on
resized and centre-cropped frames, which is also what this framing does.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from PIL import Image


def resize_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(F, C, h, w) float -> (F, C, height, width): cover-resize then centre crop."""
    import torch.nn.functional as F  # imported here: the `data check` worker processes never need torch

    _, _, h, w = frames.shape
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    if (new_h, new_w) != (h, w):
        frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return frames[:, :, top : top + height, left : left + width]


def prepare_image(image: Image.Image, height: int, width: int) -> Image.Image:
    """A conditioning image (PIL, any size) framed to ``height`` x ``width`` as training frames its clip
    (``resize_crop``), as an 8-bit RGB PIL image: what training conditions on and what every sampling path
    passes the pipeline."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    pixels = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).unsqueeze(0).float()
    framed = resize_crop(pixels, height, width)[0].round().clamp(0, 255).to(torch.uint8)
    return PILImage.fromarray(framed.permute(1, 2, 0).contiguous().numpy())


def image_tensor(image: Image.Image) -> torch.Tensor:
    """An 8-bit RGB PIL image as (C, H, W) float in [-1, 1], as the pipeline's ``VideoProcessor`` normalises it."""
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 127.5 - 1.0
