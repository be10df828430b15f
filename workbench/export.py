"""``workbench export``: a fine-tuned checkpoint -> LoRA file, merged pipeline, model card, registry, hub.

Read top to bottom: read the Lightning checkpoint (tensors only) -> rebuild the fine-tuned
transformer on its base model (``load_finetuned``, shared with the eval harness) -> write the
export into a hidden sibling directory (LoRA in diffusers format, merged pipeline, model card,
``export.json`` last) -> rename it into place -> log it to the training run's MLflow artifacts,
register a model version with the run as lineage -> optionally upload to the Hugging Face Hub.

Everything written or read is safetensors; checkpoints are loaded with ``weights_only=True``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what CogVideoXPipeline.load_lora_weights looks for
MARKER = "export.json"  # written last: an export directory without it is incomplete
EXPORT_FORMAT = "workbench-export/1"
ARTIFACT_DIR = "export"
RUN_DIR_TAG = "workbench.run_dir"

# Licenses of known base models (hub metadata ids). Anything else is reported as `other`.
BASE_LICENSES = {
    "thudm/cogvideox-2b": {"license": "apache-2.0"},
    "zai-org/cogvideox-2b": {"license": "apache-2.0"},
    "thudm/cogvideox-5b": {"license": "other", "license_name": "cogvideox-license",
                           "license_link": "https://huggingface.co/THUDM/CogVideoX-5b/blob/main/LICENSE"},
    "zai-org/cogvideox-5b": {"license": "other", "license_name": "cogvideox-license",
                             "license_link": "https://huggingface.co/zai-org/CogVideoX-5b/blob/main/LICENSE"},
}

DTYPES = ("fp32", "bf16", "fp16")


class ExportError(Exception):
    """A problem the user can fix (bad path, missing run, existing export); printed without a traceback."""


# -- reading a training checkpoint ---------------------------------------------------------------
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
    """Load a ``workbench fit`` checkpoint with ``torch.load(weights_only=True)`` (never full unpickling)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a plain tensor checkpoint"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({first}). workbench reads only "
            "tensor checkpoints written by `workbench fit` and never unpickles arbitrary objects."
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ExportError(f"{path}: not a Lightning checkpoint of `workbench fit` (no state_dict/hyper_parameters)")
    hparams = dict(ckpt["hyper_parameters"])
    if "model" not in hparams or hparams.get("mode") not in ("lora", "full"):
        raise ExportError(f"{path}: hyper_parameters do not describe a CogVideoXModule (model, mode)")
    if not ckpt["state_dict"]:
        raise ExportError(f"{path}: the checkpoint holds no trained tensors")
    return TrainedCheckpoint(path=path, hparams=hparams, state_dict=ckpt["state_dict"],
                             data_hparams=dict(ckpt.get("datamodule_hyper_parameters") or {}),
                             global_step=ckpt.get("global_step"))


def load_trained_weights(transformer, state_dict: dict, mode: str, source: str | os.PathLike) -> None:
    """Load ``transformer.<name>`` tensors into ``transformer``; fail unless every key, and every
    trainable tensor of ``mode`` (LoRA weights, or all parameters for full), is loaded."""
    prefix = "transformer."
    foreign = [k for k in state_dict if not k.startswith(prefix)]
    if foreign:
        raise ExportError(f"{source}: unexpected checkpoint keys outside the transformer: {foreign[:3]}")
    weights = {k[len(prefix):]: v for k, v in state_dict.items()}
    model_keys = set(transformer.state_dict())
    unexpected = sorted(set(weights) - model_keys)
    if unexpected:
        raise ExportError(f"{source}: {len(unexpected)} checkpoint tensors have no place in the model built from "
                          f"the base model and recipe, e.g. {unexpected[:3]}. Wrong --base-model?")
    params = [n for n, _ in transformer.named_parameters()]
    expected = {n for n in params if ".lora_" in n} if mode == "lora" else set(params)
    missing = sorted(expected - set(weights))
    if missing:
        raise ExportError(f"{source}: {len(missing)} trained tensors are missing from the checkpoint, "
                          f"e.g. {missing[:3]}; refusing a partial load")
    try:
        result = transformer.load_state_dict(weights, strict=False)
    except RuntimeError as e:
        raise ExportError(f"{source}: checkpoint does not fit the base model ({str(e).splitlines()[0]}). "
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
        raise ExportError(f"{e}.{hint}") from None
    try:
        c = load_components(base, load_vae=load_vae, load_text_encoder=load_text_encoder)
    except OSError as e:  # hub id not reachable, files missing
        raise ExportError(f"cannot load the base model {base}: {str(e).splitlines()[0]}") from None
    hp = ckpt.hparams
    if ckpt.mode == "lora":
        add_lora(c.transformer, hp["lora_rank"], hp["lora_alpha"], hp.get("lora_dropout", 0.0),
                 list(hp["lora_targets"]))
    load_trained_weights(c.transformer, ckpt.state_dict, ckpt.mode, ckpt.path)
    c.transformer.requires_grad_(False)
    c.transformer.eval()
    return c


# -- LoRA and merged weights -----------------------------------------------------------------------
def save_lora(transformer, directory: Path) -> dict:
    """Write the adapter as ``pytorch_lora_weights.safetensors`` (keys ``transformer.*``) with its
    LoraConfig as safetensors metadata, so diffusers restores rank and alpha (hence the scaling) exactly."""
    from diffusers import CogVideoXPipeline
    from peft import get_peft_model_state_dict

    config = transformer.peft_config["default"]
    metadata = config.to_dict()  # what diffusers' training scripts store (training_utils._collate_lora_metadata)
    CogVideoXPipeline.save_lora_weights(directory, transformer_lora_layers=get_peft_model_state_dict(transformer),
                                        transformer_lora_adapter_metadata=metadata)
    return {"rank": config.r, "alpha": config.lora_alpha, "targets": sorted(config.target_modules)}


def merge_lora(transformer) -> None:
    """Fuse the adapter into the base weights, then drop the PEFT layers: a plain transformer."""
    transformer.fuse_lora(lora_scale=1.0)
    transformer.unload_lora()
    leftover = [n for n in transformer.state_dict() if "lora_" in n or "base_layer" in n]
    if leftover:
        raise RuntimeError(f"LoRA layers remain after merging: {leftover[:3]}")


def save_merged_pipeline(transformer, base_model: str, directory: Path, dtype: str) -> None:
    """The base pipeline (its own VAE, T5, tokenizer and inference scheduler) with ``transformer`` in it."""
    import torch
    from diffusers import CogVideoXPipeline

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    if transformer.dtype != torch_dtype:
        transformer.to(torch_dtype)
    # Non-default dtypes go through from_pretrained so T5 keeps its fp32 modules (_keep_in_fp32_modules).
    kwargs = {} if dtype == "fp32" else {"torch_dtype": torch_dtype}
    pipe = CogVideoXPipeline.from_pretrained(base_model, transformer=transformer, use_safetensors=True, **kwargs)
    pipe.save_pretrained(directory, safe_serialization=True)
    bad = [p for p in directory.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    if bad:
        raise RuntimeError(f"non-safetensors weights written: {bad}")


# -- the model card --------------------------------------------------------------------------------
def is_hub_id(model: str) -> bool:
    return not Path(model).exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", model) is not None


def strip_front_matter(text: str) -> str:
    match = re.match(r"^---\s*\n.*?\n---\s*\n", text, flags=re.S)
    return text[match.end():] if match else text


def model_card(*, mode: str, merged: bool, base_model: str, base_model_id: str | None, title: str,
               load_from: str, lora: dict | None, recipe: str | None, dataset_card: str | None,
               metrics: dict[str, float], lineage: list[str], max_text_len: int) -> tuple[str, bool]:
    """README.md with hub front matter. Returns (text, license_known)."""
    import yaml

    hub_base = base_model_id or (base_model if is_hub_id(base_model) else None)
    license_meta = BASE_LICENSES.get((hub_base or "").lower())
    meta: dict = {}
    if hub_base:
        meta["base_model"] = hub_base
    meta["library_name"] = "diffusers"
    meta.update(license_meta or {"license": "other"})
    meta["pipeline_tag"] = "text-to-video"
    meta["tags"] = ["text-to-video", "cogvideox", mode, "diffusers-training"]
    base_ref = hub_base or base_model
    base_link = f"[{hub_base}](https://huggingface.co/{hub_base})" if hub_base else f"`{base_model}` (local)"

    kind = "LoRA adapter" if mode == "lora" else "Full fine-tune"
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {title}", "",
             f"{kind} of {base_link} for text-to-video, trained with cogvideox-workbench.", ""]
    if license_meta is None:
        lines += ["License: `other`: the base model's license is not known to the exporter; state it "
                  "here before publishing.", ""]

    lines += ["## Files", ""]
    if lora:
        lines.append(f"- `{LORA_WEIGHT_NAME}`: the LoRA adapter of the transformer (rank {lora['rank']}, "
                     f"alpha {lora['alpha']}, targets {', '.join(lora['targets'])}) in diffusers format.")
    if merged:
        what = "with the adapter merged into the transformer" if mode == "lora" else "with the fine-tuned transformer"
        lines.append(f"- `model_index.json`, `transformer/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`: "
                     f"the complete pipeline {what}.")
    lines.append(f"- `{MARKER}`: file list with sha256 checksums and the training lineage.")
    lines.append("")

    call = (f'video = pipe("a red circle moving from left to right", num_inference_steps=50, guidance_scale=6.0,\n'
            f'             max_sequence_length={max_text_len}).frames[0]\n'
            f'export_to_video(video, "video.mp4", fps=8)')
    head = "import torch\nfrom diffusers import CogVideoXPipeline\nfrom diffusers.utils import export_to_video\n\n"
    lines += ["## Usage", ""]
    if merged:
        lines += ["```python", head + f'pipe = CogVideoXPipeline.from_pretrained("{load_from}", '
                  f"torch_dtype=torch.bfloat16).to(\"cuda\")\n" + call, "```", ""]
    if lora:
        if merged:
            lines += ["Or load the adapter on top of the base model:", ""]
        lines += ["```python", head + f'pipe = CogVideoXPipeline.from_pretrained("{base_ref}", '
                  f'torch_dtype=torch.bfloat16).to("cuda")\npipe.load_lora_weights("{load_from}")\n' + call,
                  "```", ""]
    model_args = load_from if merged else f"{base_ref} --lora {load_from}"
    lines += [f'With the workbench: `workbench generate --model {model_args} --prompt "..." --out video.mp4`.', ""]

    lines += ["## Evaluation", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| `{k}` | {v:.6g} |" for k, v in sorted(metrics.items())]
    else:
        lines.append("No `eval/` metrics were logged for the training run (run `workbench eval`).")
    lines.append("")
    lines += ["## Training recipe", ""]
    lines += ["```yaml", recipe.strip(), "```"] if recipe else ["The run's config.yaml was not found."]
    lines.append("")
    lines += ["## Training data", ""]
    lines.append(strip_front_matter(dataset_card).strip() if dataset_card else "The dataset has no README.md card.")
    lines += ["", "## Lineage", ""] + [f"- {item}" for item in lineage] + [""]
    return "\n".join(lines), license_meta is not None


# -- atomic directory writes -----------------------------------------------------------------------
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_marker(directory: Path, info: dict) -> None:
    """The completion marker: every file with its sha256, plus ``info``. Written last."""
    files = {p.relative_to(directory).as_posix(): {"sha256": sha256(p), "bytes": p.stat().st_size}
             for p in sorted(directory.rglob("*")) if p.is_file()}
    tmp = directory / f".{MARKER}.tmp"
    tmp.write_text(json.dumps({**info, "files": files}, indent=2))
    os.replace(tmp, directory / MARKER)


def is_complete_export(directory: str | os.PathLike) -> bool:
    """True when ``directory`` has a readable marker and every file it lists (sizes checked, not hashes)."""
    directory = Path(directory)
    try:
        marker = json.loads((directory / MARKER).read_text())
        return marker.get("format") == EXPORT_FORMAT and all(
            (directory / name).is_file() and (directory / name).stat().st_size == entry["bytes"]
            for name, entry in marker["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def verify_export(directory: str | os.PathLike) -> list[str]:
    """Problems with an export directory (missing marker, missing or altered files); empty when intact."""
    directory = Path(directory)
    if not is_complete_export(directory):
        return [f"{directory}: no valid {MARKER} (incomplete export)"]
    marker = json.loads((directory / MARKER).read_text())
    return [f"{directory / name}: sha256 mismatch" for name, entry in marker["files"].items()
            if sha256(directory / name) != entry["sha256"]]


def _siblings(out: Path, kind: str) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.{kind}-*"))


def prepare_target(out: Path, overwrite: bool) -> None:
    """Refuse to clobber a finished export (unless ``overwrite``); remove stale partial dirs of ``out``."""
    if out.is_file():
        raise ExportError(f"{out}: is a file; --out must be a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        if is_complete_export(out):
            raise ExportError(f"{out}: already holds a complete export; pass --overwrite to replace it")
        raise ExportError(f"{out}: exists and is not a workbench export; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in _siblings(out, "partial") + _siblings(out, "old"):
        shutil.rmtree(stale, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def install(partial: Path, out: Path) -> None:
    """Move a finished ``partial`` directory to ``out`` (renames only; never a half-written ``out``)."""
    mask = _umask()  # mkdtemp and safetensors create private (0700/0600) entries; give the usual modes
    for p in [partial, *partial.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)
    aside = None
    if out.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, aside)
    os.replace(partial, out)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


# -- MLflow ----------------------------------------------------------------------------------------
def _store_exists(uri: str) -> bool:
    """False for a sqlite store whose file does not exist (opening it would create an empty one)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).is_file()
    return True


def _absolute_uri(uri: str) -> str:
    """``sqlite:///mlflow.db`` -> ``sqlite:////abs/path/mlflow.db`` (the marker must not depend on the cwd)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    return uri


def find_run(run_id: str, tracking_uri: str):
    """The MLflow run ``run_id`` or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not _store_exists(tracking_uri):
        return None
    try:
        return MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException:
        return None


def resolve_source(source: str, tracking_uri: str):
    """CHECKPOINT_OR_RUN -> (checkpoint path, MLflow run or None)."""
    path = Path(source)
    if path.is_dir() and (path / "checkpoints" / "last.ckpt").is_file():
        path = path / "checkpoints" / "last.ckpt"  # a run directory
    if path.is_file():
        parent = path.resolve().parent
        run = None
        if parent.name == "checkpoints":  # <default_root_dir>/<run id>/checkpoints/x.ckpt
            run = find_run(parent.parent.name, tracking_uri)
            if run is not None and Path(run.data.tags.get(RUN_DIR_TAG, "")) != parent.parent:
                run = None  # same id in another store: not this checkpoint's run
        return path, run
    if re.fullmatch(r"[0-9a-f]{32}", source):
        if not _store_exists(tracking_uri):
            raise ExportError(f"{source}: looks like an MLflow run id, but there is no MLflow store at "
                              f"{tracking_uri}; pass --tracking-uri")
        run = find_run(source, tracking_uri)
        if run is None:
            raise ExportError(f"{source}: no such MLflow run in {tracking_uri}")
        run_dir = run.data.tags.get(RUN_DIR_TAG)
        if not run_dir:
            raise ExportError(f"run {source} has no {RUN_DIR_TAG} tag (not a `workbench fit` run); "
                              "pass the checkpoint path instead")
        ckpt = Path(run_dir) / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise ExportError(f"run {source}: {ckpt} does not exist; pass the checkpoint path instead")
        return ckpt, run
    raise ExportError(f"{source}: neither a checkpoint file, a run directory nor an MLflow run id")


def default_registered_name(run, mode: str, tracking_uri: str) -> str:
    """``<experiment name>-<mode>``: successive exports of an experiment become versions of one model."""
    from mlflow import MlflowClient

    experiment = MlflowClient(tracking_uri).get_experiment(run.info.experiment_id).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{experiment}-{mode}").strip("-")


def log_and_register(out: Path, run, tracking_uri: str, name: str, mode: str) -> int:
    """Log ``out`` as the run's ``export/`` artifacts and register it; returns the model version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    run_id = run.info.run_id
    client.log_artifacts(run_id, str(out), ARTIFACT_DIR)
    client.set_tag(run_id, "workbench.export_dir", str(out.resolve()))
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description="CogVideoX fine-tunes exported by cogvideox-workbench")
        except MlflowException as e:
            if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
                raise
    source = f"{run.info.artifact_uri.rstrip('/')}/{ARTIFACT_DIR}"
    version = client.create_model_version(name, source=source, run_id=run_id,
                                          tags={"workbench.mode": mode}, description=f"export of run {run_id}")
    return int(version.version)


# -- Hugging Face Hub ------------------------------------------------------------------------------
def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Create ``repo_id`` (if missing) and upload ``folder``; token from HF_TOKEN or `hf auth login`."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                      commit_message="Upload CogVideoX fine-tune (cogvideox-workbench export)")
    return f"https://huggingface.co/{repo_id}"


# -- the export ------------------------------------------------------------------------------------
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
    from workbench.tracking import resolve_tracking_uri

    out = Path(out).absolute()
    uri = resolve_tracking_uri(tracking_uri)
    ckpt_path, run = resolve_source(source, uri)
    prepare_target(out, overwrite)
    ckpt = read_checkpoint(ckpt_path)
    merged = merge or ckpt.mode == "full"
    base = base_model or ckpt.base_model
    result = ExportResult(out=out, mode=ckpt.mode, files=[], run_id=run.info.run_id if run else None)

    transformer = load_finetuned(ckpt, base_model=base_model, load_vae=False, load_text_encoder=False).transformer
    if transformer.dtype != torch.float32:
        transformer.to(torch.float32)
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("eval/")} if run else {}
    if log_to_mlflow and run is not None:
        name = registered_name or default_registered_name(run, ckpt.mode, uri)
    else:
        name = registered_name or out.name

    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        lora = save_lora(transformer, partial) if ckpt.mode == "lora" else None
        if merged:
            if lora:
                merge_lora(transformer)
            save_merged_pipeline(transformer, base, partial, dtype)
        lineage = [f"checkpoint: `{ckpt.path.resolve()}` (global step {ckpt.global_step})",
                   f"base model: `{base}`"]
        if run is not None:
            lineage.append(f"MLflow run: `{run.info.run_id}` in `{_absolute_uri(uri)}`")
        card, license_known = model_card(
            mode=ckpt.mode, merged=merged, base_model=base, base_model_id=base_model_id, title=name,
            load_from=hub_repo or str(out), lora=lora,
            recipe=_read_optional(ckpt.run_dir / "config.yaml" if ckpt.run_dir else None),
            dataset_card=_dataset_card(ckpt), metrics=metrics, lineage=lineage,
            max_text_len=transformer.config.max_text_seq_length)
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
            "run_id": result.run_id, "tracking_uri": _absolute_uri(uri) if run else None,
            "workbench_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        install(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
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


# -- CLI -------------------------------------------------------------------------------------------
def cmd_export(ns: argparse.Namespace) -> int:
    try:
        result = export(ns.source, ns.out, merge=ns.merge, base_model=ns.base_model, base_model_id=ns.base_model_id,
                        dtype=ns.dtype, tracking_uri=ns.tracking_uri, log_to_mlflow=not ns.no_mlflow,
                        registered_name=ns.registered_name, hub_repo=ns.push_to_hub, private=ns.private,
                        overwrite=ns.overwrite)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"exported {result.mode} fine-tune to {result.out}")
    for name in result.files:
        print(f"  {name}")
    if result.registered:
        print(f"MLflow: logged to run {result.run_id} under {ARTIFACT_DIR}/, registered as "
              f"{result.registered[0]} version {result.registered[1]}")
    if result.hub_url:
        print(f"pushed to {result.hub_url}")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``workbench export`` on the top-level subparsers."""
    p = subparsers.add_parser(
        "export",
        help="export a fine-tune: LoRA file, merged pipeline, model card, MLflow registry, hub",
        description=(
            "Export a `workbench fit` checkpoint: the LoRA adapter as pytorch_lora_weights.safetensors "
            "(stock CogVideoXPipeline.load_lora_weights), with --merge (always for full fine-tunes) a complete "
            "pipeline (CogVideoXPipeline.from_pretrained), a model card README.md and export.json (file list, "
            "sha256). The directory appears only when complete. The export is logged to the training run's "
            "MLflow artifacts under export/ and registered as a model version. --push-to-hub REPO then creates "
            "the hub repo (if missing) and uploads the directory, with the token of `hf auth login` or $HF_TOKEN."
        ),
    )
    p.add_argument("source", metavar="CHECKPOINT_OR_RUN",
                   help="a .ckpt written by `workbench fit`, a run directory, or an MLflow run id "
                        "(its checkpoints/last.ckpt)")
    p.add_argument("--out", required=True, help="export directory (created; must not hold an export)")
    p.add_argument("--merge", action="store_true",
                   help="also write the complete pipeline with the LoRA merged into the transformer")
    p.add_argument("--base-model", help="base model to use instead of the checkpoint's recorded one "
                                         "(hub id or diffusers directory; when it moved)")
    p.add_argument("--base-model-id", help="hub id of the base model for the model card when the base is a "
                                            "local copy (e.g. THUDM/CogVideoX-2b); sets base_model and license")
    p.add_argument("--dtype", choices=DTYPES, default="fp32",
                   help="dtype of the merged pipeline's weights (default fp32; bf16/fp16 halve its size)")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--registered-name", help="MLflow registered model name (default: <experiment>-<mode>)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the export to MLflow or register it")
    p.add_argument("--push-to-hub", metavar="REPO",
                   help="upload the finished export to the Hugging Face Hub model repo REPO (user/name); "
                        "needs network and a token (`hf auth login` or $HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="create the hub repo as private")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export at --out")
    p.set_defaults(func=cmd_export)
    return p
