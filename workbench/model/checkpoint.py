"""Reading what ``workbench fit`` saved: a Lightning checkpoint holding only the trained tensors.

``load_checkpoint_safely`` is the one place a checkpoint file is read (``torch.load(weights_only=True)``,
never arbitrary unpickling); ``load_finetuned`` rebuilds the fine-tuned model on its base model for
evaluation, export and generation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.common import UserError, first_line

MLFLOW_CHECKPOINT_KEY = "mlflow"  # checkpoint["mlflow"] = {"run_id", "tracking_uri"}, written by RunSetup


class CheckpointError(UserError):
    """A checkpoint that cannot be used (missing, not plain tensors, not from `workbench fit`, not fitting)."""


def load_checkpoint_safely(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """``torch.load(weights_only=True)``: tensors and plain Python data only, never arbitrary unpickling.

    Raises CheckpointError naming the file when it is missing or holds anything else (a pickled object).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a plain tensor checkpoint"
        raise CheckpointError(
            f"{path}: refused, it cannot be read with torch.load(weights_only=True) ({first_line(e)}). workbench "
            "loads only checkpoints of tensors and plain data (as `workbench fit` writes them) and never unpickles "
            "arbitrary objects, which could run code. Use a checkpoint written by `workbench fit`."
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (a {type(checkpoint).__name__}, not a dict)")
    return checkpoint


@dataclass
class TrainedCheckpoint:
    """What ``workbench fit`` saved: the module's init args and only the trained tensors."""

    path: Path
    hparams: dict
    state_dict: dict
    data_hparams: dict = field(default_factory=dict)
    global_step: int | None = None

    @property
    def mode(self) -> str:
        return self.hparams.get("mode", "lora")

    @property
    def base_model(self) -> str:
        return str(self.hparams["model"])

    @property
    def run_dir(self) -> Path | None:
        """``<run dir>/checkpoints/x.ckpt`` -> the run directory (config.yaml, samples)."""
        parent = self.path.resolve().parent
        return parent.parent if parent.name == "checkpoints" else None


def read_checkpoint(path: str | os.PathLike) -> TrainedCheckpoint:
    """A ``workbench fit`` checkpoint, read safely and checked to describe a CogVideoXModule."""
    path = Path(path)
    ckpt = load_checkpoint_safely(path)
    if "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint of `workbench fit` (no state_dict/hyper_parameters)")
    hparams = dict(ckpt["hyper_parameters"])
    if "model" not in hparams or hparams.get("mode") not in ("lora", "full"):
        raise CheckpointError(f"{path}: hyper_parameters do not describe a CogVideoXModule (model, mode)")
    if not ckpt["state_dict"]:
        raise CheckpointError(f"{path}: the checkpoint holds no trained tensors")
    return TrainedCheckpoint(path=path, hparams=hparams, state_dict=ckpt["state_dict"],
                             data_hparams=dict(ckpt.get("datamodule_hyper_parameters") or {}),
                             global_step=ckpt.get("global_step"))


def load_trained_weights(transformer, state_dict: dict, mode: str, source: str | os.PathLike) -> None:
    """Load ``transformer.<name>`` tensors into ``transformer``; fail unless every key, and every
    trainable tensor of ``mode`` (LoRA weights, or all parameters for full), is loaded."""
    prefix = "transformer."
    foreign = [k for k in state_dict if not k.startswith(prefix)]
    if foreign:
        raise CheckpointError(f"{source}: unexpected checkpoint keys outside the transformer: {foreign[:3]}")
    weights = {k[len(prefix):]: v for k, v in state_dict.items()}
    model_keys = set(transformer.state_dict())
    unexpected = sorted(set(weights) - model_keys)
    if unexpected:
        raise CheckpointError(f"{source}: {len(unexpected)} checkpoint tensors have no place in the model built from "
                              f"the base model and recipe, e.g. {unexpected[:3]}. Wrong --base-model?")
    params = [n for n, _ in transformer.named_parameters()]
    expected = {n for n in params if ".lora_" in n} if mode == "lora" else set(params)
    missing = sorted(expected - set(weights))
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} trained tensors are missing from the checkpoint, "
                              f"e.g. {missing[:3]}; refusing a partial load")
    try:
        result = transformer.load_state_dict(weights, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: checkpoint does not fit the base model ({first_line(e)}). "
                              "Wrong --base-model?") from None
    assert not result.unexpected_keys, result.unexpected_keys


def load_finetuned(checkpoint: str | os.PathLike | TrainedCheckpoint, *, base_model: str | None = None,
                   load_vae: bool = True, load_text_encoder: bool = True):
    """Rebuild the fine-tuned model of a ``workbench fit`` checkpoint as ``CogVideoXComponents``.

    The base model comes from the checkpoint's recorded ``model`` unless ``base_model`` overrides it
    (when the base directory moved). In lora mode the same PEFT adapter is injected and its weights
    loaded; in full mode the whole transformer is loaded. Every checkpoint tensor must be used.
    The returned transformer is in eval mode with gradients off.
    """
    from workbench.model.adapters import add_lora
    from workbench.model.loading import check_model_source, load_components

    ckpt = checkpoint if isinstance(checkpoint, TrainedCheckpoint) else read_checkpoint(checkpoint)
    base = base_model or ckpt.base_model
    try:
        check_model_source(base)
    except FileNotFoundError as e:
        hint = "" if base_model else f" The checkpoint was trained on {base}; pass --base-model if it moved."
        raise CheckpointError(f"{e}.{hint}") from None
    try:
        c = load_components(base, load_vae=load_vae, load_text_encoder=load_text_encoder)
    except OSError as e:  # hub id not reachable, files missing
        raise CheckpointError(f"cannot load the base model {base}: {first_line(e)}") from None
    hp = ckpt.hparams
    if ckpt.mode == "lora":
        lora = hp.get("lora") or {  # checkpoints before the module's settings were grouped kept them flat
            "rank": hp["lora_rank"], "alpha": hp["lora_alpha"], "dropout": hp.get("lora_dropout", 0.0),
            "targets": hp["lora_targets"]}
        add_lora(c.transformer, lora["rank"], lora["alpha"], lora.get("dropout", 0.0), list(lora["targets"]))
    load_trained_weights(c.transformer, ckpt.state_dict, ckpt.mode, ckpt.path)
    c.transformer.requires_grad_(False)
    c.transformer.eval()
    return c
