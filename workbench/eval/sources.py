"""What is evaluated: ``--model`` (a pipeline directory or hub id, a ``workbench fit`` checkpoint, run
directory or MLflow run id), ``--lora`` and the base model, resolved and checked without loading weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.common import UserError, first_line, is_hub_id
from workbench.eval.suite import EvalError
from workbench.model.checkpoint import load_finetuned, read_checkpoint
from workbench.model.loading import check_model_source
from workbench.model.pipeline import load_pipeline, prepare_pipeline
from workbench.tracking.runs import resolve_checkpoint


@dataclass
class ModelSource:
    """The model under evaluation, resolved from --model/--lora/--base-model, and its base."""

    label: str  # --model as given
    pipeline_dir: str | None = None  # a diffusers pipeline dir or hub id
    lora: Path | None = None
    checkpoint: Path | None = None
    global_step: int | None = None
    run: Any = None  # the MLflow run the results attach to (checkpoint / run id evaluations)
    base_model: str | None = None  # for --compare-base
    trained: Any = None  # the TrainedCheckpoint of ``checkpoint``
    family: Any = None  # the model's family (its base's, the same), read once by resolve_model

    def load(self, device, dtype: str, compile: bool = False, attention: str = "sdpa"):
        """A ``CogVideoXPipeline`` of the model under evaluation on ``device`` in ``dtype`` (fp32/bf16/fp16)."""
        if self.checkpoint is None:
            return _ready(load_pipeline(self.pipeline_dir, lora=str(self.lora) if self.lora else None,
                                        device=str(device), dtype=dtype, compile=compile, attention=attention,
                                        family=self.family))
        pipe = load_finetuned(self.trained, base_model=self.base_model).pipeline()
        return _ready(prepare_pipeline(pipe, device, dtype, compile=compile, attention=attention))

    def load_base(self, device, dtype: str, compile: bool = False, attention: str = "sdpa"):
        return _ready(load_pipeline(self.base_model, device=str(device), dtype=dtype, compile=compile,
                                    attention=attention, family=self.family))


def _ready(pipe):
    pipe.set_progress_bar_config(disable=True)  # the harness's own bar counts videos
    if pipe.device.type == "cuda":  # one video at a time through the VAE saves memory; on a CPU batches are
        pipe.vae.enable_slicing()  # 2.4x faster (0.25 vs 0.59 s a 17x64x64 video, 2 cores)
    pipe.transformer.eval()
    return pipe


def resolve_model(model: str, *, lora: str | None = None, base_model: str | None = None,
                  compare_base: bool = False, tracking_uri: str) -> ModelSource:
    """--model (pipeline dir or hub id, a ``workbench fit`` checkpoint or run dir, an MLflow run id) -> ModelSource.

    Checks that every file exists and the checkpoint reads, without loading any model.
    """
    src = ModelSource(label=model)
    path = Path(model).expanduser()
    if lora is not None:
        src.lora = Path(lora).expanduser()
        if not src.lora.exists():
            raise EvalError(f"--lora {lora}: no such LoRA file or directory (write one with `workbench export`)")
    if path.is_dir() and (path / "model_index.json").is_file():
        src.pipeline_dir = str(path)
    elif is_hub_id(model):
        src.pipeline_dir = model
    elif path.is_dir() and any(path.glob("*lora*.safetensors")):
        base = _export_base(path) or "BASE_MODEL"
        raise EvalError(f"--model {model}: a LoRA without a pipeline; evaluate it as --model {base} --lora {model}")
    else:
        if lora is not None:
            raise EvalError("--lora applies to a pipeline directory (--model DIR); a checkpoint or run id "
                            "already carries its fine-tune")
        try:
            ckpt_path, src.run = resolve_checkpoint(model, tracking_uri)
            src.trained = read_checkpoint(ckpt_path)
        except UserError as e:
            raise EvalError(f"--model {e}") from None
        src.checkpoint, src.global_step = ckpt_path, src.trained.global_step
        src.base_model = base_model or src.trained.base_model
        try:
            check_model_source(src.base_model)
        except FileNotFoundError as e:
            hint = "" if base_model else " (the checkpoint's base model); pass --base-model if it moved"
            raise EvalError(f"{e}{hint}") from None
        src.family = _family(src.base_model, "--base-model" if base_model else "--model (its base model)")
        return src
    try:  # its weights refused by their headers (truncated, pickled) here, before anything loads
        check_model_source(src.pipeline_dir)
    except FileNotFoundError as e:
        raise EvalError(f"--model {e}") from None
    if compare_base:
        src.base_model = base_model or (src.pipeline_dir if src.lora is not None else _export_base(path))
        if src.base_model is None:
            raise EvalError(f"--compare-base: {model} is a merged model with no recorded base; pass --base-model")
        try:
            if src.base_model != src.pipeline_dir:  # a LoRA's base is the pipeline checked above
                check_model_source(src.base_model)
        except FileNotFoundError as e:
            raise EvalError(f"--base-model: {e}") from None
    src.family = _family(src.pipeline_dir, "--model")
    return src


def _family(model: str, flag: str):
    """The family of the model under evaluation, read once from its configs (its base shares it)."""
    from workbench.model.families import FamilyError, family_of_model

    try:
        return family_of_model(model)
    except (OSError, FamilyError) as e:
        raise EvalError(f"{flag} {model}: {first_line(e)}") from None


def _export_base(path: Path) -> str | None:
    """The base model recorded by ``workbench export`` in ``export.json``, if any."""
    try:
        return json.loads((path / "export.json").read_text()).get("base_model")
    except (OSError, ValueError, AttributeError):
        return None
