"""The fine-tuned weights in files stock diffusers loads: the LoRA file and the merged pipeline."""

from __future__ import annotations

from pathlib import Path

from workbench.common import torch_dtype
from workbench.model.loading import PICKLE_SUFFIXES

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what CogVideoXPipeline.load_lora_weights looks for


def tensors_nbytes(tensors: dict) -> int:
    """Bytes a state dict's tensors take in safetensors files (each written whole, a tied tensor once), less the
    small headers."""
    seen, total = set(), 0
    for t in tensors.values():
        key = id(t) if t.device.type == "meta" else (t.data_ptr(), t.nelement(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.nelement() * t.element_size()
    return total


def save_lora(transformer, directory: Path, before_write=None) -> dict:
    """Write the adapter as ``pytorch_lora_weights.safetensors`` (keys ``transformer.*``) with its
    LoraConfig as safetensors metadata, so diffusers restores rank and alpha (hence the scaling) exactly.
    ``before_write(nbytes)``, when given, hears the bytes of the tensors about to be written."""
    from diffusers import CogVideoXPipeline
    from peft import get_peft_model_state_dict

    config = transformer.peft_config["default"]
    metadata = config.to_dict()  # what diffusers' training scripts store (training_utils._collate_lora_metadata)
    state = get_peft_model_state_dict(transformer)
    if before_write is not None:
        before_write(tensors_nbytes(state))
    CogVideoXPipeline.save_lora_weights(directory, transformer_lora_layers=state,
                                        transformer_lora_adapter_metadata=metadata)
    return {"rank": config.r, "alpha": config.lora_alpha, "targets": sorted(config.target_modules)}


def merge_lora(transformer) -> None:
    """Fuse the adapter into the base weights, then drop the PEFT layers: a plain transformer."""
    transformer.fuse_lora(lora_scale=1.0)
    transformer.unload_lora()
    leftover = [n for n in transformer.state_dict() if "lora_" in n or "base_layer" in n]
    if leftover:
        raise RuntimeError(f"LoRA layers remain after merging: {leftover[:3]}")


def save_merged_pipeline(transformer, base_model: str, directory: Path, dtype: str, before_write=None, *,
                         family) -> None:
    """The base pipeline (its own VAE, T5, tokenizer and inference scheduler) with ``transformer`` in it, as
    ``family``'s stock pipeline class (the export reads the family once and passes it here and to the card).
    ``before_write(nbytes)``, when given, hears the bytes of all its weights before anything is written."""
    import diffusers
    import torch

    wanted = torch_dtype(dtype)
    if transformer.dtype != wanted:
        transformer.to(wanted)
    # Non-default dtypes go through from_pretrained so T5 keeps its fp32 modules (_keep_in_fp32_modules).
    kwargs = {} if dtype == "fp32" else {"torch_dtype": wanted}
    pipeline_class = getattr(diffusers, family.pipeline_class)  # the I2V families: the I2V pipeline
    pipe = pipeline_class.from_pretrained(base_model, transformer=transformer, use_safetensors=True, **kwargs)
    if before_write is not None:
        before_write(sum(tensors_nbytes(c.state_dict()) for c in pipe.components.values()
                         if isinstance(c, torch.nn.Module)))
    pipe.save_pretrained(directory, safe_serialization=True)
    bad = [p for p in directory.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if bad:
        raise RuntimeError(f"non-safetensors weights written: {bad}")
