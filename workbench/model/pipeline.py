"""Stock ``CogVideoXPipeline`` loading and rendering, for ``workbench generate`` and evaluation.

Works on anything diffusers loads: a merged export directory (or hub repo), or a base model plus a
LoRA (``pytorch_lora_weights.safetensors`` or the export directory holding it). No workbench
code runs inside the pipeline, so what this renders is what a diffusers user gets.
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench.common import ImageUnreadable, UserError, first_line, open_rgb_image, torch_dtype, write_video


class GenerateError(UserError):
    """A problem the user can fix (missing model, bad size); printed without a traceback."""


def load_pipeline(model: str, lora: str | None = None, device: str | None = None, dtype: str | None = None,
                  compile: bool = False, attention: str = "sdpa", *, family):
    """The family's stock pipeline (``CogVideoXPipeline``; ``CogVideoXImageToVideoPipeline`` for the
    image-to-video families) ``.from_pretrained(model)`` (+ ``load_lora_weights(lora)``) on ``device``.

    ``compile``: ``torch.compile`` each transformer block (regional; the first denoising step pays
    the compilation; docs/performance.md measures when it pays off). ``attention``: sdpa, flash4 or auto
    (workbench.model.attention). ``family``: the model's family, read once where the command started
    (``workbench.model.families.family_of_model``: ``generate_video``, the evaluation's model source) and passed
    on, never read again here."""
    import diffusers
    import torch

    from workbench.model.loading import check_safetensors_file

    pipeline_class = getattr(diffusers, family.pipeline_class)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("bf16" if device.startswith("cuda") else "fp32")
    kwargs = {} if dtype == "fp32" else {"torch_dtype": torch_dtype(dtype)}
    try:
        pipe = pipeline_class.from_pretrained(model, use_safetensors=True, **kwargs)
    except OSError as e:
        raise GenerateError(f"cannot load {model}: {first_line(e)}") from None
    if lora is not None:
        path = Path(lora)
        lora_file = path if path.is_file() else path / "pytorch_lora_weights.safetensors"
        if lora_file.is_file():
            try:
                check_safetensors_file(lora_file, "LoRA file")
            except UserError as e:
                raise GenerateError(str(e)) from None
        if path.is_file():
            pipe.load_lora_weights(str(path.parent), weight_name=path.name)
        elif path.is_dir():
            if not (path / "pytorch_lora_weights.safetensors").is_file():
                raise GenerateError(f"{lora}: no pytorch_lora_weights.safetensors in this directory")
            pipe.load_lora_weights(str(path))
        elif path.exists() or lora.startswith((".", "/", "~")):
            raise GenerateError(f"{lora}: no such LoRA file or directory")
        else:
            pipe.load_lora_weights(lora)  # a hub repo id
    return prepare_pipeline(pipe, device, compile=compile, attention=attention)


def prepare_pipeline(pipe, device, dtype: str | None = None, compile: bool = False, attention: str = "sdpa"):
    """What every loaded pipeline gets before it samples (``load_pipeline``'s and a fine-tuned checkpoint's,
    workbench.eval.sources): ``dtype`` (None: as loaded), the device, the attention kernel, regional compile."""
    from workbench.model.attention import set_attention
    from workbench.model.speed import compile_blocks

    if dtype not in (None, "fp32"):
        pipe.to(dtype=torch_dtype(dtype))
    pipe.to(device)
    set_attention(pipe.transformer, attention, device)
    if compile:
        compile_blocks(pipe.transformer)
    return pipe


def generate_video(model: str, prompt: str, out: str | os.PathLike, *, lora: str | None = None,
                   negative_prompt: str | None = None, steps: int = 50, guidance: float = 6.0,
                   frames: int | None = None, height: int | None = None, width: int | None = None,
                   seed: int = 42, fps: float | None = None, lora_scale: float = 1.0, device: str | None = None,
                   dtype: str | None = None, progress: bool = True, compile: bool = False,
                   attention: str = "sdpa", image: str | os.PathLike | None = None) -> Path:
    """Render ``prompt`` to ``out`` (mp4). Frames, size and fps default to the model family's native clip (49
    frames at 8 fps, 480x720 for CogVideoX-2B and 5B; 81 frames at 16 fps, 768x1360 for CogVideoX1.5-5B).
    ``image``: the first frame an image-to-video model animates (required for those, refused for the others)."""

    from workbench.model.families import FamilyError, family_of_model
    from workbench.model.loading import check_model_source

    try:  # the clip and the image are checked against the model's family (read from its configs) before any
        # weight loads
        check_model_source(model)
        family = family_of_model(model)
        clip = family.clip(frames, height, width, fps or "auto")
        family.check_clip(clip.num_frames, clip.height, clip.width)
        images = [load_conditioning_image(image, "--image")] if image is not None else None
        images = family.sampling_inputs(images, clip.height, clip.width, 1, where="--image").get("image")
    except (FamilyError, FileNotFoundError) as e:
        raise GenerateError(str(e)) from None
    pipe = load_pipeline(model, lora, device, dtype, compile=compile, attention=attention, family=family)
    pipe.set_progress_bar_config(disable=not progress)
    video = render_videos(pipe, family, [prompt], [seed], clip, steps=steps, guidance=guidance, images=images,
                          negative_prompt=negative_prompt,
                          attention_kwargs={"scale": lora_scale} if lora is not None else None)[0]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_video(out, video, clip.fps)


def render_videos(pipe, family, prompts: list[str], seeds: list[int], clip, *, steps: int, guidance: float,
                  images: list | None = None, text: dict | None = None, negative_prompt: str | None = None,
                  generator_device="cpu", attention_kwargs: dict | None = None, where: str = ""):
    """The one loop that renders videos with a stock pipeline: validation videos, ``workbench generate``, suite
    evaluation and the shapes world's judge all call it. One video per prompt, each from its own generator
    seeded with its seed (on ``generator_device``, CPU by default: the same noise on every device), at ``clip``
    (frames, height, width) with the family's text length; ``images`` (PIL, one per prompt) go through the
    family (``sampling_inputs``: refused by a text-to-video family, framed as training framed them for an
    image-to-video one; an image framed already stays as it is); ``text`` replaces ``prompts`` with precomputed ``prompt_embeds`` (and
    ``negative_prompt_embeds``). Returns (B, F, C, H, W) float in [0, 1] on the CPU."""
    import torch

    extra = family.sampling_inputs(images, clip.height, clip.width, len(prompts), where=where)
    generators = [torch.Generator(generator_device).manual_seed(int(s)) for s in seeds]
    words = text if text is not None else {"prompt": list(prompts), "negative_prompt": negative_prompt}
    out = pipe(**words, num_videos_per_prompt=1, generator=generators, num_frames=clip.num_frames,
               height=clip.height, width=clip.width, num_inference_steps=steps, guidance_scale=guidance,
               max_sequence_length=family.text_len, output_type="pt", attention_kwargs=attention_kwargs, **extra)
    return out.frames.float().clamp(0, 1).cpu()


def load_conditioning_image(path, what: str = "image"):
    """The image an image-to-video model animates, as a PIL RGB image as the file holds it (``render_videos``
    frames it to the clip); one-line errors for a missing or undecodable file."""
    try:
        return open_rgb_image(path)
    except FileNotFoundError:
        raise GenerateError(f"{what} {path}: no such file") from None
    except ImageUnreadable as e:
        raise GenerateError(f"{what} {path}: not a readable image ({e}); pass a PNG or JPEG") from None
