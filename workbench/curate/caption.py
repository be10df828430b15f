"""``workbench data caption ROOT``: caption a dataset's clips with a vision-language model (Qwen2.5-VL).

The captioner is any Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint transformers loads natively (hub id or local
folder; default Qwen2.5-VL-7B-Instruct). Each clip gives ``frames`` frames spread evenly over it (or over a range
row's ``start``..``end``) by presentation time, downsized to ``max_side``, and is shown to the model as those
frames in order (one image each, through the checkpoint's own image processor and chat template; the processor's
``videos=`` path needs torchvision, which the workbench does not depend on). Greedy decoding, ``batch_size`` clips
a ``generate`` call, left padding.

The manifest is the user's: only rows without a caption are filled (every row with ``overwrite``), the original
is kept once as ``NAME.orig``, and the manifest is rewritten atomically after every caption, so a killed run loses
at most the captions in flight and a rerun goes on where it stopped. jsonl and csv rows get a ``caption_source``
field naming the captioner. Every caption is measured with the CogVideoX family's T5 tokenizer against its text
length (226): longer ones are kept and reported (the pipeline would cut them at 226 tokens).
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from workbench.common import UserError, atomic_write_text, first_line, folder_lock, is_hub_id
from workbench.data.manifest import Entry, find_manifest, read_lines, read_manifest, refuse_paths_outside_root

DEFAULT_CAPTIONER = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_TOKENIZER_MODEL = "THUDM/CogVideoX-2b"  # every CogVideoX family shares this T5 tokenizer
SUPPORTED_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

# CogVideoX was trained on dense captions from CogVLM2-Caption, asked "Please describe this video in detail."
# (THUDM/CogVideo, tools/caption/video_caption.py); its prompt-upsampling system prompt
# (inference/convert_demo.py) asks for the same style: one paragraph naming the subjects, their look, what moves
# and how, the setting, light and style. This instruction asks for that paragraph directly.
DEFAULT_PROMPT = (
    "These are frames of one video clip, in order. Describe the video in detail in a single paragraph of plain "
    "prose: the main subjects and their appearance (colours, shapes, clothing, textures), what they do and how they "
    "move, how the camera moves (static, panning, zooming, tracking), the setting and background, the lighting and "
    "the visual style. Describe only what is visible, without lists, headings or an introduction, in at most 150 "
    "words."
)


class CaptionError(UserError, ValueError):
    """A caption run that cannot start (a bad option, a captioner that is not one)."""


@dataclass
class CaptionSummary:
    captioned: list[str] = field(default_factory=list)
    skipped: int = 0  # rows that already had a caption
    failed: list[str] = field(default_factory=list)  # "file: why"
    too_long: list[str] = field(default_factory=list)  # "file (N tokens)"
    manifest: str = ""

    def lines(self, max_text_len: int) -> list[str]:
        out = [f"captioned {len(self.captioned)} clips, kept {self.skipped} existing captions: {self.manifest}"]
        if self.too_long:
            out.append(f"{len(self.too_long)} captions are over {max_text_len} T5 tokens (the pipeline cuts them): "
                       + ", ".join(self.too_long[:10]) + (" ..." if len(self.too_long) > 10 else ""))
        if self.failed:
            out.append(f"{len(self.failed)} clips not captioned: " + "; ".join(self.failed[:10])
                       + (" ..." if len(self.failed) > 10 else ""))
        return out


# -- the manifest -------------------------------------------------------------------------------------------------
class CaptionedManifest:
    """The dataset's manifest as rows whose captions can be set; ``save`` rewrites it atomically, keeping every
    row and column (and every line that is not a row) as it was."""

    def __init__(self, root: Path):
        self.root = root
        self.layout = find_manifest(root)
        self.entries = read_manifest(root)
        if self.layout == "metadata.jsonl":
            self.path = root / "metadata.jsonl"
            self.lines = read_lines(self.path)
            self.rows = [n for n, line in enumerate(self.lines) if line.strip()]  # entry i -> line index
        elif self.layout == "metadata.csv":
            self.path = root / "metadata.csv"
            raw = self.path.read_bytes().decode("utf-8-sig")
            self.bom = self.path.read_bytes().startswith(b"\xef\xbb\xbf")
            reader = csv.DictReader(io.StringIO(raw, newline=""))
            self.fields = [f.strip() for f in reader.fieldnames or []]
            reader.fieldnames = self.fields
            self.table = [dict(r) for r in reader]
        else:
            self.path = root / "prompts.txt"
            self.prompts = read_lines(self.path)
            self.prompts += [""] * (len(self.entries) - len(self.prompts))
        self.backed_up = False

    def has_caption(self, i: int) -> bool:
        return self.entries[i].caption is not None

    def set_caption(self, i: int, caption: str, source: str) -> None:
        if self.layout == "metadata.jsonl":
            row = json.loads(self.lines[self.rows[i]])
            row["caption"], row["caption_source"] = caption, source
            self.lines[self.rows[i]] = json.dumps(row, ensure_ascii=False)
        elif self.layout == "metadata.csv":
            for name in ("caption", "caption_source"):
                if name not in self.fields:
                    self.fields.append(name)
            self.table[i]["caption"], self.table[i]["caption_source"] = caption, source
        else:
            self.prompts[i] = caption

    def save(self) -> None:
        if not self.backed_up:  # the user's manifest as it was before the first caption, once
            backup = self.path.with_name(self.path.name + ".orig")
            if not backup.exists():
                atomic_write_text(backup, self.path.read_bytes().decode("utf-8"), what="manifest backup")
            self.backed_up = True
        if self.layout == "metadata.jsonl":
            text = "\n".join(self.lines) + "\n"
        elif self.layout == "metadata.csv":
            buf = io.StringIO(newline="")
            writer = csv.DictWriter(buf, fieldnames=self.fields, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.table)
            text = ("\ufeff" if self.bom else "") + buf.getvalue()
        else:
            text = "\n".join(self.prompts) + "\n"
        atomic_write_text(self.path, text, what="manifest")


# -- frames -------------------------------------------------------------------------------------------------------
def clip_frames(entry: Entry, root: Path, frames: int, max_side: int):
    """``frames`` PIL images spread evenly over the clip (or the row's start..end range) by presentation time,
    each the middle of its slice, downsized so the longer side is at most ``max_side``."""
    from PIL import Image

    from workbench.data.decoding import probe, read_frames

    path = entry.path(root)
    info = probe(path)
    start = getattr(entry, "start", None)
    end = getattr(entry, "end", None)
    t0 = 0.0 if start is None else max(0.0, float(start))
    t1 = info.duration if end is None else min(info.duration, float(end))
    if not t1 > t0:
        raise ValueError(f"empty range {t0:.3f}..{t1:.3f} s")
    step = (t1 - t0) / frames
    times = [min(t0 + (k + 0.5) * step, info.duration) for k in range(frames)]
    images = []
    for array in read_frames(path, times):
        image = Image.fromarray(array)
        scale = max_side / max(image.size)
        if scale < 1:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.BICUBIC)
        images.append(image)
    return images


# -- the captioner ------------------------------------------------------------------------------------------------
def check_captioner(captioner: str) -> str:
    """The captioner's model_type, or a CaptionError naming the fix (before anything heavy is loaded)."""
    local = Path(captioner).expanduser()
    if local.is_dir():
        config = local / "config.json"
        if not config.is_file():
            raise CaptionError(f"{captioner}: not a model folder (no config.json); pass a Qwen2.5-VL checkpoint "
                               f"folder or hub id such as {DEFAULT_CAPTIONER}")
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (ValueError, UnicodeDecodeError, AttributeError) as e:
            raise CaptionError(f"{config}: unreadable config ({first_line(e)}); re-download the captioner") from None
    elif is_hub_id(captioner):
        from huggingface_hub import try_to_load_from_cache

        from workbench.model.loading import check_hub_model

        try:
            check_hub_model(captioner, "config.json")
        except UserError:
            raise CaptionError(f"{captioner}: no such local folder, and as a hub id it is not in the local cache "
                               f"while the hub cannot be reached (offline): download it first (`hf download "
                               f"{captioner}`) or pass a local Qwen2.5-VL folder") from None
        cached = try_to_load_from_cache(captioner, "config.json")
        model_type = json.loads(Path(cached).read_text()).get("model_type") if isinstance(cached, str) else None
    else:
        raise CaptionError(f"{captioner}: no such captioner folder; pass a local Qwen2.5-VL folder or a hub id such "
                           f"as {DEFAULT_CAPTIONER}")
    if not model_type and local.is_dir():
        raise CaptionError(f"{captioner}: config.json names no model_type, so it is not a transformers captioner; "
                           f"pass a Qwen2.5-VL checkpoint folder or hub id such as {DEFAULT_CAPTIONER}")
    if model_type is not None and model_type not in SUPPORTED_TYPES:
        raise CaptionError(f"{captioner}: a '{model_type}' model; the captioner must be a Qwen2-VL, Qwen2.5-VL or "
                           f"Qwen3-VL checkpoint (CogVLM2-Caption: see datasets/README.md, Captioning)")
    return model_type or "qwen2_5_vl"


class Captioner:
    """A Qwen-VL checkpoint loaded with ``from_pretrained``: tokenizer (chat template), image processor, model."""

    def __init__(self, captioner: str, device: str, dtype, prompt: str, max_new_tokens: int):
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        self.prompt, self.max_new_tokens, self.device = prompt, max_new_tokens, device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.tokenizer = AutoTokenizer.from_pretrained(captioner, padding_side="left")
            self.image_processor = AutoImageProcessor.from_pretrained(captioner)
            self.model = AutoModelForImageTextToText.from_pretrained(captioner, dtype=dtype,
                                                                     use_safetensors=True).to(device).eval()
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise CaptionError(f"{captioner}: the tokenizer has no chat template; use an -Instruct checkpoint")
        self.merge = int(getattr(self.image_processor, "merge_size", 2))
        self.image_token = "<|image_pad|>"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def caption(self, clips: list[list]) -> list[tuple[str, bool]]:
        """One (caption, finished) per clip (a list of PIL frames); ``finished`` is False where decoding stopped
        at ``max_new_tokens``."""
        import torch

        messages = [[{"role": "user", "content": [{"type": "image"} for _ in frames]
                      + [{"type": "text", "text": self.prompt}]}] for frames in clips]
        texts = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
        images = [image for frames in clips for image in frames]
        vision = self.image_processor(images=images, return_tensors="pt")
        counts = iter((vision["image_grid_thw"].prod(-1) // self.merge**2).tolist())
        # each <|image_pad|> stands for its image's merged patches, as the model's processor expands it
        expanded = []
        for text in texts:
            parts = text.split(self.image_token)
            expanded.append(parts[0] + "".join(self.image_token * next(counts) + p for p in parts[1:]))
        inputs = self.tokenizer(expanded, padding=True, return_tensors="pt")
        inputs = {**inputs, **vision}
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        results = []
        for row in new.tolist():
            finished = any(t in eos for t in row)
            results.append((self.tokenizer.decode(row, skip_special_tokens=True), finished))
        return results


def tidy(text: str, finished: bool) -> str:
    """One paragraph: whitespace collapsed; a caption cut by max_new_tokens ends at its last full sentence."""
    text = re.sub(r"\s+", " ", text).strip()
    if not finished:
        cut = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
        if cut > 0:
            text = text[:cut + 1]
        elif text.endswith((".", "!", "?")):
            pass
    return text


# -- the job ------------------------------------------------------------------------------------------------------
def caption_dataset(root: str | Path, captioner: str = DEFAULT_CAPTIONER, *, prompt: str = DEFAULT_PROMPT,
                    prefix: str = "", overwrite: bool = False, frames: int = 8, max_side: int = 448,
                    batch_size: int = 4, max_new_tokens: int = 160, device: str = "auto", dtype: str = "auto",
                    model: str | None = None, max_text_len: int | None = None, progress: bool = True,
                    warn=print) -> tuple[CaptionSummary, int]:
    """Fill the captions of ``root``'s manifest (see the module's docstring); returns the summary and the text
    length captions were measured against."""
    root = Path(root)
    for name, value, least in (("--frames", frames, 1), ("--batch-size", batch_size, 1),
                               ("--max-new-tokens", max_new_tokens, 1), ("--max-side", max_side, 28)):
        if value < least:
            raise CaptionError(f"{name} {value}: must be at least {least}")
    if not prompt.strip():
        raise CaptionError("--prompt is empty: give the instruction the captioner follows (or leave it out)")
    find_manifest(root)  # a missing folder or manifest: its one-line message, before the lock
    busy = (f"{root}: another `workbench data caption` is writing this dataset's captions now; wait for it to "
            "end (two at once would overwrite each other's)")
    with folder_lock(root, busy):  # from reading the manifest to its last caption written
        manifest = CaptionedManifest(root)
        refuse_paths_outside_root(manifest.entries, root, "workbench data caption")
        todo = [i for i in range(len(manifest.entries)) if overwrite or not manifest.has_caption(i)]
        summary = CaptionSummary(skipped=len(manifest.entries) - len(todo), manifest=str(manifest.path))
        model_type = check_captioner(captioner)
        tokenizer, max_text_len = _length_tokenizer(model, max_text_len)
        if not todo:
            return summary, max_text_len

        import torch
        from tqdm import tqdm

        from workbench.common import torch_dtype

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bf16" if device.startswith("cuda") else "fp32"
        try:
            torch_type = torch_dtype(dtype)
            torch.empty(0, device=device)
        except (ValueError, RuntimeError) as e:
            raise CaptionError(f"--device {device} / --dtype {dtype}: {first_line(e)}") from None
        try:
            model_ = Captioner(captioner, device, torch_type, prompt, max_new_tokens)
        except CaptionError:
            raise
        except (OSError, ValueError, KeyError) as e:
            raise CaptionError(f"{captioner}: cannot load the captioner ({first_line(e)}); pass a Qwen2.5-VL-Instruct "
                               f"folder or hub id such as {DEFAULT_CAPTIONER}") from None
        del model_type
        source = captioner
        bar = tqdm(total=len(todo), desc="captioning", unit="clip", disable=not progress)
        for b in range(0, len(todo), batch_size):
            batch, clips = [], []
            for i in todo[b:b + batch_size]:
                entry = manifest.entries[i]
                try:
                    clips.append(clip_frames(entry, root, frames, max_side))
                    batch.append(i)
                except (ValueError, OSError, UserError) as e:  # VideoError is a ValueError
                    summary.failed.append(f"{entry.file_name} ({entry.where}): {first_line(e)}")
                    bar.update(1)
            if not batch:
                continue
            for i, (text, finished) in zip(batch, model_.caption(clips)):
                entry = manifest.entries[i]
                text = tidy(text, finished)
                if not text:
                    summary.failed.append(f"{entry.file_name} ({entry.where}): the captioner returned no text")
                    bar.update(1)
                    continue
                caption = f"{prefix.strip()} {text}" if prefix.strip() else text
                manifest.set_caption(i, caption, source)
                manifest.save()  # each caption on disk as it finishes
                summary.captioned.append(entry.file_name)
                if tokenizer is not None:
                    n = len(tokenizer(caption).input_ids)
                    if n > max_text_len:
                        if not summary.too_long:
                            warn(f"warning: {entry.file_name}: caption is {n} T5 tokens, over the {max_text_len} the "
                                 "model reads (all such captions are listed at the end)")
                        summary.too_long.append(f"{entry.file_name} ({n} tokens)")
                bar.update(1)
        bar.close()
        return summary, max_text_len


def _length_tokenizer(model: str | None, max_text_len: int | None):
    """The CogVideoX T5 tokenizer of ``model`` and the family's text length, or a CaptionError with the fix."""
    from workbench.data.check import DEFAULT_MAX_TEXT_LEN, load_tokenizer

    name = model or DEFAULT_TOKENIZER_MODEL
    if max_text_len is None:
        max_text_len = DEFAULT_MAX_TEXT_LEN
        try:
            from workbench.model.families import family_of_hub_id, family_of_model

            family = family_of_hub_id(name) if is_hub_id(name) and not Path(name).is_dir() else family_of_model(name)
            max_text_len = family.text_len if family is not None else max_text_len
        except Exception:  # noqa: BLE001 - the tokenizer's loading below says what is wrong
            pass
    if max_text_len < 1:
        raise CaptionError(f"--max-text-len {max_text_len}: must be at least 1")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_tokenizer(name), max_text_len
    except Exception as e:  # noqa: BLE001 - offline, no such folder, no tokenizer/ in it
        raise CaptionError(f"{name}: cannot load the CogVideoX T5 tokenizer that measures captions "
                           f"({first_line(e)}); pass --model with a local CogVideoX folder (diffusers layout)") from None
