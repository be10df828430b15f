"""``workbench export``'s job: a fine-tuned checkpoint -> LoRA file, merged pipeline, model card, registry, hub.

Read top to bottom: read the Lightning checkpoint (tensors only) and rebuild the fine-tuned transformer
on its base model (workbench.model.checkpoint) -> write the export into a hidden sibling directory (LoRA
in diffusers format and merged pipeline: workbench.export.weights; model card: workbench.export.card;
``export.json`` last: workbench.export.directory) -> rename it into place (a previous export at ``out``, with
``--overwrite``, stays until the new one is complete; a full disk, or too little room for the merged pipeline's
weights, removes the partial directory and is one line, ``DiskFull``, naming ``out`` and the bytes the export's
tensors need) -> log it to the training run's
MLflow artifacts and register a model version with the run as lineage, optionally upload to the Hugging
Face Hub (workbench.export.publish).

Everything written or read is safetensors; checkpoints are loaded with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from workbench.common import DiskFull, disk_full_error, free_bytes, is_hub_id
from workbench.export.card import model_card
from workbench.export.directory import EXPORT_FORMAT, MARKER, install, no_space, prepare_target, write_marker
from workbench.export.publish import default_registered_name, log_and_register, push_to_hub
from workbench.export.weights import merge_lora, save_lora, save_merged_pipeline
from workbench.model.checkpoint import TrainedCheckpoint, load_finetuned, read_checkpoint
from workbench.model.families import family_of_model
from workbench.tracking.runs import resolve_checkpoint
from workbench.tracking.store import absolute_uri, resolve_tracking_uri


@dataclass
class ExportResult:
    out: Path
    mode: str
    files: list[str]
    run_id: str | None = None
    registered: tuple[str, int] | None = None
    hub_url: str | None = None
    notes: list[str] = field(default_factory=list)


def _read_optional(path: Path | None) -> str | None:
    return path.read_text() if path is not None and path.is_file() else None


def _dataset_card(ckpt: TrainedCheckpoint) -> str | None:
    root = ckpt.data_hparams.get("root")
    if not root:
        return None
    candidates = [Path(root)]
    if not Path(root).is_absolute() and ckpt.run_dir is not None:
        candidates.append(ckpt.run_dir.parent.parent / root)  # relative to where `fit` ran (runs/<id>/..)
    return next((p.joinpath("README.md").read_text() for p in candidates if p.joinpath("README.md").is_file()), None)


def export(source: str, out: str | os.PathLike, *, merge: bool = False, base_model: str | None = None,
           base_model_id: str | None = None, dtype: str = "fp32", tracking_uri: str | None = None,
           log_to_mlflow: bool = True, registered_name: str | None = None, hub_repo: str | None = None,
           private: bool = False, overwrite: bool = False) -> ExportResult:
    """Export a ``workbench fit`` checkpoint (or MLflow run id) to ``out``; see the module docstring."""
    import torch

    from workbench import __version__

    out = Path(out).absolute()
    uri = resolve_tracking_uri(tracking_uri)
    ckpt_path, run = resolve_checkpoint(source, uri)
    prepare_target(out, overwrite)
    ckpt = read_checkpoint(ckpt_path)
    merged = merge or ckpt.mode == "full"
    base = base_model or ckpt.base_model
    result = ExportResult(out=out, mode=ckpt.mode, files=[], run_id=run.info.run_id if run else None)

    transformer = load_finetuned(ckpt, base_model=base_model, load_vae=False, load_text_encoder=False).transformer
    family = family_of_model(base)  # read once: the merged pipeline's class and the card's usage are the family's
    if transformer.dtype != torch.float32:
        transformer.to(torch.float32)
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("eval/")} if run else {}
    if log_to_mlflow and run is not None:
        name = registered_name or default_registered_name(run, ckpt.mode, uri)
    else:
        name = registered_name or out.name

    needed = 0  # bytes of the export's tensors, as far as known: what a full disk's message names

    def before_write(nbytes: int, check_free: bool = False) -> None:
        nonlocal needed
        needed += nbytes
        free = free_bytes(out.parent) if check_free else None
        if free is not None and free < nbytes:  # refused before gigabytes are written in vain
            raise disk_full_error(out, needed, "the export")

    partial = None
    try:
        partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        lora = save_lora(transformer, partial, before_write) if ckpt.mode == "lora" else None
        if merged:
            if lora:
                merge_lora(transformer)
            save_merged_pipeline(transformer, base, partial, dtype, lambda n: before_write(n, check_free=True),
                                 family=family)
        lineage = [f"checkpoint: `{ckpt.path.resolve()}` (global step {ckpt.global_step})",
                   f"base model: `{base}`"]
        if run is not None:
            lineage.append(f"MLflow run: `{run.info.run_id}` in `{absolute_uri(uri)}`")
        card, license_known = model_card(
            mode=ckpt.mode, merged=merged, base_model=base, base_model_id=base_model_id, title=name,
            load_from=hub_repo or str(out), lora=lora,
            recipe=_read_optional(ckpt.run_dir / "config.yaml" if ckpt.run_dir else None),
            dataset_card=_dataset_card(ckpt), metrics=metrics, lineage=lineage,
            family=family)
        if not license_known:
            unnamed = "" if base_model_id or is_hub_id(base) else \
                " and names no base_model (pass --base-model-id if it is a local copy of a hub model)"
            result.notes.append(f"base model {base_model_id or base} has no known license: the model card says "
                                f"`license: other`{unnamed}; edit README.md before publishing")
        (partial / "README.md").write_text(card)
        write_marker(partial, {
            "format": EXPORT_FORMAT, "mode": ckpt.mode, "merged": merged, "dtype": dtype if merged else "fp32",
            "base_model": base, "base_model_id": base_model_id, "lora": lora,
            "checkpoint": str(ckpt.path.resolve()), "global_step": ckpt.global_step,
            "run_id": result.run_id, "tracking_uri": absolute_uri(uri) if run else None,
            "workbench_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        install(partial, out)
    except BaseException as e:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)  # first: the message counts the space it held as free
        if isinstance(e, DiskFull) or (isinstance(e, Exception) and no_space(e)):
            raise disk_full_error(out, needed or None, "the export") from e
        raise
    result.files = sorted(json.loads((out / MARKER).read_text())["files"])

    if log_to_mlflow and run is not None:
        result.registered = (name, log_and_register(out, run, uri, name, ckpt.mode))
    elif log_to_mlflow:
        result.notes.append(f"{ckpt_path}: no MLflow run found for it in {uri}; the export was not logged or "
                            "registered (pass the run id, or --tracking-uri)")
    if hub_repo:
        result.hub_url = push_to_hub(out, hub_repo, private=private)
    return result
