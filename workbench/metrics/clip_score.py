"""Frame-averaged CLIP score for text-to-video.

For a video (F, C, H, W) and its prompt the score is
``mean_f 100 * max(cos(E_image(frame_f), E_text(prompt)), 0)``, i.e. torchmetrics'
per-image CLIP score, clipped per frame, averaged over frames. (torchmetrics'
``CLIPScore.compute`` clips after averaging, so per-frame values are computed
here from its model and processor.)

Workbench video convention: float tensors in [0, 1] (RGB); uint8 in [0, 255] is
accepted too. Float frames outside [0, 1] (beyond 1e-3 of round-off) are refused
with the range found and the conversion ((x + 1) / 2 for [-1, 1], x / 255 for
[0, 255]): a [-1, 1] video would otherwise be scored as a different image. CLIP
processors rescale pixels by 1/255 themselves, so frames are handed to them as
uint8 in [0, 255]; passing [0, 1] floats would be rescaled twice.

Long prompts: one deliberate difference from torchmetrics. A prompt longer than
the text encoder's context (77 tokens for OpenAI CLIP) is truncated by the
tokenizer to ``<|startoftext|> + the first 75 tokens + <|endoftext|>``, as
OpenAI's ``clip.tokenize(..., truncate=True)`` does (it overwrites the last
kept token with the end-of-text token). torchmetrics instead slices the token
ids to the context length, which drops the end-of-text token. CLIP was trained
with the end-of-text token closing every caption, and its text feature is read
at that token: transformers' ``CLIPTextTransformer`` pools the hidden state at
the first ``eos_token_id`` position (or, for configs with the legacy
``eos_token_id == 2``, at the highest token id, which is the end-of-text id in
CLIP's vocabulary). Without it the pooled position is wrong: the first position
(the start token, whose state does not depend on the prompt at all) in the
first case, the largest word id in the second. So truncation here keeps it; for
prompts that fit, the two agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.multimodal import CLIPScore
from torchmetrics.utilities import dim_zero_cat

from workbench.common import is_hub_id
from workbench.metrics.fvd import check_unit_range


class _TensorFeaturesCLIP(nn.Module):
    """CLIPModel whose ``get_*_features`` return tensors.

    transformers >= 5 returns ``BaseModelOutputWithPooling`` (projected embeddings
    in ``pooler_output``), which torchmetrics 1.9's CLIPScore cannot use
    (Lightning-AI/torchmetrics#3407).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(out: Any) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(pixel_values=pixel_values, **kwargs))

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        out = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return self._tensor(out)


def _load_model_and_processor(model_name_or_path: str | Path) -> tuple[nn.Module, Any]:
    from huggingface_hub.errors import HFValidationError
    from transformers import CLIPModel, CLIPProcessor

    name = str(model_name_or_path)
    local = Path(name).expanduser()
    if local.exists():
        name = str(local)
    elif not is_hub_id(name):
        raise FileNotFoundError(
            f"CLIP model directory {local} does not exist. Pass a directory written with "
            "CLIPModel/CLIPProcessor.save_pretrained or a Hugging Face hub id such as "
            "openai/clip-vit-large-patch14 (for tests: workbench.metrics.standins.build_tiny_clip)."
        )
    try:
        model = CLIPModel.from_pretrained(name, use_safetensors=True).eval()
        processor = CLIPProcessor.from_pretrained(name)
    except (OSError, HFValidationError) as err:
        raise FileNotFoundError(
            f"could not load CLIP model {name!r}: not a complete save_pretrained directory and not available "
            f"from the Hugging Face hub or its local cache ({err}). Download it while online or pass a local "
            "directory with the model and processor files."
        ) from err
    return _TensorFeaturesCLIP(model), processor


def load_clip(model_name_or_path: str | Path) -> CLIPScore:
    """torchmetrics ``CLIPScore`` for a hub id or a local ``save_pretrained`` directory.

    The model is loaded through a callable because torchmetrics only accepts
    a fixed list of hub ids as strings.
    """
    return CLIPScore(model_name_or_path=lambda: _load_model_and_processor(model_name_or_path))


def _frames_uint8(video: torch.Tensor) -> torch.Tensor:
    """uint8 frames (F, 3, H, W) of a video (F, C, H, W): uint8 as is, float in exactly [0, 1]
    (1e-3 of round-off allowed, clamped) times 255 rounded; other ranges raise ValueError."""
    if not isinstance(video, torch.Tensor) or video.ndim != 4 or video.shape[1] not in (1, 3):
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"video must be a (F, C, H, W) tensor with C in (1, 3), got {shape}.")
    if video.shape[0] == 0:
        raise ValueError("video has no frames.")
    if video.dtype == torch.uint8:
        frames = video
    elif video.is_floating_point():
        check_unit_range(video, "video frames")
        frames = (video.float() * 255).round().clamp(0, 255).to(torch.uint8)
    else:
        raise ValueError(f"video must be float in [0, 1] or uint8, got dtype {video.dtype}.")
    return frames.expand(-1, 3, -1, -1) if frames.shape[1] == 1 else frames


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def image_text_embeddings(clip: Any, frames: torch.Tensor, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised CLIP embeddings (F, D) of uint8 frames (F, 3, H, W) and (1, D) of ``prompt``.

    Preprocessing mirrors torchmetrics' ``_get_features``, except for prompts longer
    than the text encoder's context: the tokenizer truncates them to the context
    keeping the end-of-text token last (OpenAI CLIP's truncation; torchmetrics drops
    that token, see the module doc). ``clip`` is anything with ``.model`` and ``.processor``.
    """
    model, processor = clip.model, clip.processor
    device = _model_device(model)
    pixels = processor(images=[f.cpu() for f in frames], return_tensors="pt")["pixel_values"]
    image_emb = model.get_image_features(pixels.to(device))
    max_len = model.config.text_config.max_position_embeddings
    text = processor(text=[prompt], return_tensors="pt", padding=True, truncation=True, max_length=max_len)
    text_emb = model.get_text_features(text["input_ids"].to(device), text["attention_mask"].to(device))
    return image_emb, text_emb


def clip_frame_scores(clip: Any, video: torch.Tensor, prompt: str) -> torch.Tensor:
    """Per-frame ``100 * max(cos, 0)`` (F,) for a video (F, C, H, W) in [0, 1] (or uint8 in [0, 255])."""
    image_emb, text_emb = image_text_embeddings(clip, _frames_uint8(video), prompt)
    cos = torch.nn.functional.cosine_similarity(image_emb.float(), text_emb.float(), dim=-1)
    return 100 * cos.clamp(min=0)


def clip_score_video(clip: Any, video: torch.Tensor, prompt: str) -> float:
    """Frame-averaged CLIP score of one video (F, C, H, W) in [0, 1] against its prompt.

    ``clip`` is a ``CLIPScore`` from ``load_clip`` or a ``VideoCLIPScore``.
    """
    return float(clip_frame_scores(clip, video, prompt).mean())


def clip_scores(clip: Any, videos: torch.Tensor | Sequence[torch.Tensor], prompts: Sequence[str]) -> torch.Tensor:
    """Per-video frame-averaged CLIP scores (B,) for videos (B, F, C, H, W) and B prompts."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if len(videos) != len(prompts):
        raise ValueError(f"got {len(videos)} videos but {len(prompts)} prompts; pass one prompt per video.")
    return torch.tensor([clip_score_video(clip, v, p) for v, p in zip(videos, prompts)], dtype=torch.float32)


class VideoCLIPScore(Metric):
    """Mean frame-averaged CLIP score over videos, as a torchmetrics Metric.

    ``update(videos (B, F, C, H, W) in [0, 1], prompts)``; ``compute()`` returns
    the mean over videos; ``per_video()`` returns all per-video scores. The
    scores are a list state (``dist_reduce_fx="cat"``) of 1-D tensors in the
    metric's dtype, so they gather across processes; a process that scored no
    video takes part with torchmetrics' 1-D empty tensor of that dtype, which
    gathers with the others' (n,) scores.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, model_name_or_path: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        loaded = load_clip(model_name_or_path)
        # Kept out of the module tree so CLIP weights are not saved in
        # checkpoints of a LightningModule holding this metric; the model
        # follows the inputs' device in update().
        object.__setattr__(self, "model", loaded.model)
        object.__setattr__(self, "processor", loaded.processor)
        self.add_state("scores", default=[], dist_reduce_fx="cat")

    def update(self, videos: torch.Tensor | Sequence[torch.Tensor], prompts: Sequence[str]) -> None:
        """Score a batch of videos against their prompts."""
        if len(videos) and _model_device(self.model) != videos[0].device:
            self.model.to(videos[0].device)
        self.scores.append(clip_scores(self, videos, prompts).to(device=self.device, dtype=self.dtype))

    def per_video(self) -> torch.Tensor:
        """All per-video scores accumulated so far (gathered across processes after a sync)."""
        if isinstance(self.scores, torch.Tensor):
            return self.scores
        return dim_zero_cat(self.scores) if self.scores else torch.empty(0, device=self.device)

    def compute(self) -> torch.Tensor:
        """Mean score over all videos."""
        scores = self.per_video()
        if scores.numel() == 0:
            raise ValueError("VideoCLIPScore has no videos; call update() first.")
        return scores.mean()
