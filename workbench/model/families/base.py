"""The base of every model family (``ModelFamily``), the clip type and the registry; see the package doc."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from workbench.common import UserError


class FamilyError(UserError, ValueError):
    """A recipe, suite or command asks a model family for what it cannot do (a clip size, a family name that
    contradicts the model); the message names the rule and the fix."""


@dataclass(frozen=True)
class Clip:
    """A clip shape: frames at ``fps``, ``height`` x ``width`` pixels."""

    num_frames: int
    height: int
    width: int
    fps: float

    def __str__(self) -> str:
        return f"{self.num_frames} frames at {self.fps:g} fps, {self.height}x{self.width}"


class ModelFamily:
    """The base family: CogVideoX-2B's rules, which every member shares unless its module overrides them.

    An instance carries the model's own configs (``transformer_config``, ``vae_config``: dicts as saved in
    diffusers layout), so the values that vary inside a family (text length, scaling factor) come from the
    model, and the values that define the family (its native clip, its padding) from the module.
    """

    name: ClassVar[str] = "cogvideox"
    title: ClassVar[str] = "CogVideoX"
    hub_id: ClassVar[str] = ""
    pipeline_class: ClassVar[str] = "CogVideoXPipeline"
    native: ClassVar[Clip]
    size_multiple: ClassVar[int] = 16  # VAE factor 8 x patch size 2
    released_text_len: ClassVar[int] = 226  # the released transformer's max_text_seq_length
    temporal_compression: ClassVar[int] = 4  # the causal VAE: 4k+1 frames -> k+1 latent frames
    image_conditioned: ClassVar[bool] = False  # image-to-video: the transformer also takes an image's latents

    def __init__(self, transformer_config: Mapping[str, Any], vae_config: Mapping[str, Any] | None = None):
        self.transformer_config = dict(transformer_config)
        self.vae_config = dict(vae_config) if vae_config is not None else None

    # -- which models are of this family ------------------------------------------------------------
    @classmethod
    def matches(cls, transformer_config: Mapping[str, Any]) -> bool:
        """Whether the transformer has this family's architecture (an image-to-video sibling inherits it; the
        input channels tell the two apart: ``takes_image``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.title} family>"

    # -- clips ---------------------------------------------------------------------------------------
    def check_clip(self, num_frames: int | None = None, height: int | None = None, width: int | None = None,
                   where: str = "") -> None:
        """Raise FamilyError naming the rule and the fix when this family cannot take the clip."""
        at = f"{where}: " if where else ""
        t = self.temporal_compression
        if num_frames is not None and (num_frames < 1 or (num_frames - 1) % t):
            lower = max(1, (num_frames - 1) // t * t + 1)
            raise FamilyError(f"{at}num_frames={num_frames}: {self.title} needs {t}k+1 frames (its VAE compresses "
                              f"time {t}x); use {lower} or {lower + t} (native: {self.native.num_frames})")
        m = self.size_multiple
        for side, value in (("height", height), ("width", width)):
            if value is not None and (value < m or value % m):
                lower = max(m, value // m * m)
                raise FamilyError(f"{at}{side}={value}: {self.title} needs sides that are multiples of {m}; use "
                                  f"{lower} or {lower + m} (native: {self.native.height}x{self.native.width})")

    def clip(self, num_frames: int | None = None, height: int | None = None, width: int | None = None,
             fps: float | str | None = "auto") -> Clip:
        """The clip a recipe or command asks for, with what it leaves out (None; ``fps``: ``auto``) taken from
        the native clip. ``fps=None`` stays None: consecutive source frames at each clip's own rate."""
        n = self.native
        return Clip(n.num_frames if num_frames is None else num_frames, n.height if height is None else height,
                    n.width if width is None else width, n.fps if fps == "auto" else fps)

    def check_data(self, num_frames: int, height: int, width: int, buckets=None, where: str = "data") -> None:
        """``check_clip`` for a data setting: the frame count, the size, and each bucket's size."""
        self.check_clip(num_frames, height, width, where=where)
        for h, w in buckets or []:
            self.check_clip(None, h, w, where=f"{where}.buckets [{h}, {w}]")

    # -- text ----------------------------------------------------------------------------------------
    @property
    def text_len(self) -> int:
        """T5 tokens per prompt (the transformer's ``max_text_seq_length``: 226 in every released diffusers config)."""
        return int(self.transformer_config["max_text_seq_length"])

    # -- encoding (training from raw video, the cache, validation: one code path) --------------------------
    def encode_clips(self, vae, videos, images=None, ids=None) -> dict:
        """The named tensors a batch of clips (B, C, F, H, W in [-1, 1]) is stored as in the cache and read as in
        training: the VAE's latent distribution (mean and log-variance, 2C channels), so a cached sample draws a
        fresh latent every step as a raw one does. A family that conditions on more (an image: ``images``
        (B, C, H, W), default each clip's first frame; ``ids``, each clip's identity, which seeds its noise) adds
        its tensors; a text-to-video family ignores both."""
        return {"latent_dist": vae.encode(videos.to(vae.dtype)).latent_dist.parameters}

    def training_conditioning(self, encoded: dict, sample, generators, latent_frames: int, train: bool,
                              settings=None, vae=None):
        """What the transformer takes besides the noisy latents and the text, drawn for a training or validation
        step from ``encoded`` (``encode_clips``' tensors) with ``sample`` (a latent distribution -> a draw) and
        the per-sample ``generators``, after every other draw of the step: None for a text-to-video family (it
        draws nothing, so its steps are what they always were); an image-to-video family's image latents."""
        return None

    # -- sampling: what every path that renders a video passes the stock pipeline (model/pipeline.render_videos)
    def sampling_inputs(self, images, height: int, width: int, count: int, where: str = "") -> dict:
        """The pipeline arguments besides the prompt and the clip, for ``count`` prompts with ``images`` (PIL, one
        per prompt, or None): a text-to-video family takes no image (FamilyError, one line)."""
        if images:
            at = f"{where}: " if where else ""
            raise FamilyError(f"{at}{self.title} is a text-to-video model and takes no conditioning image: leave the "
                              "images out, or use an image-to-video model")
        return {}

    # -- image conditioning (image-to-video families override; see image_to_video.py) ----------------
    def transformer_inputs(self, noisy, image_latents=None) -> dict:
        """The keyword arguments of the transformer's forward besides timestep, text and rotary: the noisy
        latents (B, F, C, H, W) as ``hidden_states``; an image-to-video family concatenates its image latents on
        channels and adds ``ofs``, exactly as its stock pipeline calls the transformer."""
        if image_latents is not None:
            raise ValueError(f"{self.title} is a text-to-video family: it takes no image latents")
        return {"hidden_states": noisy}

    def encode_prompts(self, tokenizer, text_encoder, captions: list[str]):
        """T5 embeddings of ``captions``, padded and truncated to ``text_len`` as the pipeline encodes them."""
        from workbench.model.text import encode_prompts

        return encode_prompts(tokenizer, text_encoder, captions, self.text_len)

    # -- latents -------------------------------------------------------------------------------------
    @property
    def scaling_factor(self) -> float:
        """What the VAE's latents are multiplied by before the transformer sees them (1.15258426 for 2B, 0.7
        for 5B and 1.5), as the pipelines divide by it before decoding."""
        if self.vae_config is None:
            raise RuntimeError(f"{self.title}: the VAE config was not read")
        return float(self.vae_config["scaling_factor"])

    def padding_frames(self, latent_frames: int) -> int:
        """Latent frames the transformer needs in front of ``latent_frames`` (none: it patches single frames)."""
        return 0

    def pad_latent_frames(self, latents):
        """Latents (B, F, C, H, W) as the transformer takes them: unchanged for families that patch single
        frames."""
        return latents

    def rotary_embeddings(self, latent_frames: int, latent_height: int, latent_width: int, device):
        """The 3D rotary embedding of a latent grid, or None for a family with sincos positions (2B)."""
        return None

    # -- export --------------------------------------------------------------------------------------
    def card_usage(self) -> dict[str, str]:
        """What a model card's usage snippets need: the task, the pipeline's image argument and imports, the
        ``workbench generate`` option (empty for text-to-video) and how to prepare the image."""
        return {"task": "text-to-video", "image_arg": "", "utils": "export_to_video", "generate_option": "",
                "prepare": ""}

    def card_facts(self) -> dict[str, str]:
        """What a model card says about the base model."""
        return {"family": self.title, "pipeline": self.pipeline_class, "native clip": str(self.native),
                "frames": f"{self.temporal_compression}k+1", "sizes": f"multiples of {self.size_multiple}"}


def takes_image(transformer_config: Mapping[str, Any]) -> bool:
    """True for an image-to-video transformer: twice the latent channels in (video latents + image latents).
    ``family_of_configs`` pairs it with each family's ``image_conditioned``, so a family's ``matches`` reads only
    the architecture it shares with its image-to-video sibling."""
    out = transformer_config.get("out_channels", 16)
    return transformer_config.get("in_channels", 16) == 2 * out


FAMILIES: dict[str, type[ModelFamily]] = {}


def register(cls: type[ModelFamily]) -> type[ModelFamily]:
    FAMILIES[cls.name] = cls
    return cls
