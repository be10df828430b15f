"""Load CogVideoX components from a hub id or a local directory in diffusers layout.

This is the one place that calls ``from_pretrained`` for the base model; tests reach it through
the tiny random model that ``workbench.model.tiny`` saves in the same layout.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    CogVideoXDPMScheduler,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
)
from transformers import AutoTokenizer, T5EncoderModel

from workbench.common import UserError, is_hub_id


@dataclass
class CogVideoXComponents:
    """The parts of a CogVideoX pipeline that training and sampling need."""

    transformer: CogVideoXTransformer3DModel | None  # None: loaded for encoding only (prepare)
    vae: AutoencoderKLCogVideoX | None
    text_encoder: T5EncoderModel | None
    tokenizer: object | None
    scheduler: CogVideoXDPMScheduler
    sampling_scheduler: object | None = None

    def pipeline(self) -> CogVideoXPipeline:
        """The family's stock pipeline (``CogVideoXPipeline``, or ``CogVideoXImageToVideoPipeline`` for the
        image-to-video families) sharing these modules (no copies), sampling with the model's own saved
        scheduler (DDIM for CogVideoX-2B), as the base model and an export would."""
        import diffusers

        from workbench.model.families import family_of_configs

        if self.vae is None or self.text_encoder is None or self.tokenizer is None:
            raise RuntimeError("sampling needs the VAE, text encoder and tokenizer; they were not loaded")
        pipeline_class = getattr(diffusers, family_of_configs(self.transformer.config, self.vae.config).pipeline_class)
        return pipeline_class(
            tokenizer=self.tokenizer,
            text_encoder=self.text_encoder,
            vae=self.vae,
            transformer=self.transformer,
            scheduler=self.sampling_scheduler or self.scheduler,
        )


class ModelNotFound(UserError, FileNotFoundError):
    """A model that is neither a diffusers directory here nor a hub id that can be loaded."""


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers (False at once under HF_HUB_OFFLINE=1 or without a network)."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    host, _, port = endpoint.partition(":")
    try:
        socket.create_connection((host, int(port or 443)), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def check_hub_model(model: str, filename: str = "model_index.json") -> None:
    """Fail fast, with the fix, for a hub id that is not in the local cache while the hub cannot be reached
    (instead of from_pretrained's retries, a minute, then a traceback)."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, filename), str) or hub_reachable():
        return
    raise ModelNotFound(
        f"{model}: no such local directory, and as a Hugging Face Hub id it is not in the local cache while the hub "
        "cannot be reached (offline). Pass a model directory in diffusers layout, or download it first on a "
        f"connected machine (`hf download {model}`) and copy the cache (HF_HOME) or the folder here.")


def check_model_source(model: str) -> None:
    """Fail early and clearly for a local path that is not a diffusers CogVideoX directory, and for a hub id
    that cannot be loaded offline."""
    if is_hub_id(model):
        check_hub_model(model)
        return  # a hub id such as THUDM/CogVideoX-2b; from_pretrained resolves it
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelNotFound(
            f"{model}: no such model directory. Pass a hub id (THUDM/CogVideoX-2b) or a directory "
            "in diffusers layout (model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/)."
        )
    missing = [p for p in ("model_index.json", "transformer", "scheduler") if not (path / p).exists()]
    if missing:
        raise ModelNotFound(f"{model}: not a diffusers CogVideoX directory, missing {', '.join(missing)}")
    for sub in ("transformer", "vae", "text_encoder"):
        refuse_pickled_weights(path / sub)
        for weights in sorted((path / sub).glob("*.safetensors")) if (path / sub).is_dir() else []:
            check_safetensors_file(weights)


class CorruptWeightsError(UserError, ValueError):
    """A safetensors file whose size or header says it is not whole (a half-copied or truncated file)."""


def check_safetensors_file(path: str | Path, what: str = "weights file") -> None:
    """Refuse, in one line naming the file, a safetensors file that is truncated or does not parse: its 8-byte
    header length, its JSON header and the end of its last tensor must fit the file's size exactly. Reads the
    header only (cheap for a 20 GB shard); a flipped byte inside a tensor is caught by an export's sha256
    (``workbench export`` records them in export.json; ``verify_export``)."""
    import json
    import struct

    path = Path(path)
    size = path.stat().st_size
    fix = "copy it again from its source (a half-copied or truncated file)"
    try:
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > min(size - 8, 100 * 2**20):
                raise ValueError(f"a header of {header_len} bytes")
            header = json.loads(f.read(header_len))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as e:
        raise CorruptWeightsError(f"{path}: {what} is not a readable safetensors file ({e}; {size} bytes): {fix}") \
            from None
    if 8 + header_len + end != size:
        raise CorruptWeightsError(f"{path}: {what} is {size} bytes where its header says {8 + header_len + end}: "
                                  f"{fix}")


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class PickledWeightsError(UserError, FileNotFoundError):
    """A model directory holds its weights only in pickle files, which workbench never loads."""


def refuse_pickled_weights(directory: Path) -> None:
    """Raise PickledWeightsError if ``directory`` has pickle weight files and no safetensors ones.

    ``from_pretrained(use_safetensors=True)`` refuses them too, but with a message that names neither
    the component nor the reason.
    """
    directory = Path(directory)
    if not directory.is_dir() or any(directory.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise PickledWeightsError(
            f"{directory}: weights only in pickle format ({', '.join(pickled)}); workbench loads weights from "
            "safetensors only, since unpickling a file can run code. Convert them where you trust the file: "
            "from_pretrained(..., use_safetensors=False) then save_pretrained(...) writes .safetensors."
        )


def load_components(
    model: str,
    *,
    transformer: str | None = None,
    transformer_module: CogVideoXTransformer3DModel | None = None,
    load_vae: bool = True,
    load_text_encoder: bool = True,
    load_transformer: bool = True,
    torch_dtype: torch.dtype | None = None,
    revision: str | None = None,
) -> CogVideoXComponents:
    """Load the components of ``model`` (hub id or local diffusers directory).

    ``transformer`` optionally points at another transformer directory (a full fine-tune export);
    ``transformer_module`` reuses an already loaded transformer (only the other parts are loaded).
    The training scheduler is ``CogVideoXDPMScheduler`` built from the model's own scheduler config,
    as the diffusers CogVideoX trainer does (examples/cogvideo/train_cogvideox_lora.py).
    Weights are read from safetensors only. ``torch_dtype``: the VAE's and text encoder's (T5 keeps its fp32
    modules); ``load_transformer=False``: the encoders only (``workbench prepare``): the one home of the base
    model's ``from_pretrained`` calls (every family loads the same diffusers classes).
    """
    check_model_source(model)
    common = dict(revision=revision)
    encoders = {**common, **({"torch_dtype": torch_dtype} if torch_dtype is not None else {})}
    if not load_transformer:
        net = None
    elif transformer_module is not None:
        net = transformer_module
    elif transformer is not None:
        refuse_pickled_weights(Path(transformer))
        net = CogVideoXTransformer3DModel.from_pretrained(transformer, use_safetensors=True)
    else:
        net = CogVideoXTransformer3DModel.from_pretrained(
            model, subfolder="transformer", use_safetensors=True, **common
        )
    scheduler = CogVideoXDPMScheduler.from_pretrained(model, subfolder="scheduler", **common)
    sampling_scheduler = saved_scheduler(model, revision)
    vae = text_encoder = tokenizer = None
    if load_vae:
        vae = AutoencoderKLCogVideoX.from_pretrained(model, subfolder="vae", use_safetensors=True, **encoders)
    if load_text_encoder:
        text_encoder = T5EncoderModel.from_pretrained(
            model, subfolder="text_encoder", use_safetensors=True, **encoders
        )
        tokenizer = AutoTokenizer.from_pretrained(model, subfolder="tokenizer", **common)
    return CogVideoXComponents(net, vae, text_encoder, tokenizer, scheduler, sampling_scheduler)


def saved_scheduler(model: str, revision: str | None = None):
    """The inference scheduler the model ships (its scheduler_config.json's class)."""
    import diffusers

    config = CogVideoXDPMScheduler.load_config(model, subfolder="scheduler", revision=revision)
    cls = getattr(diffusers, config.get("_class_name", ""), None) or CogVideoXDPMScheduler
    return cls.from_config(config)


def absolute_if_local(model: str) -> str:
    """A local model directory as an absolute path (so checkpoints and exports find it from anywhere);
    hub ids unchanged."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def freeze(module: torch.nn.Module | None) -> None:
    """Freeze a module and put it in eval mode (VAE, text encoder, base transformer weights)."""
    if module is None:
        return
    module.requires_grad_(False)
    module.eval()
