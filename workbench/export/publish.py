"""Publishing an export: the MLflow model registry (with the training run as lineage) and the Hugging Face Hub."""

from __future__ import annotations

import re
from pathlib import Path

from workbench.common import writing

ARTIFACT_DIR = "export"  # the training run's artifact folder holding the export


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
    destination = f"{run.info.artifact_uri.rstrip('/')}/{ARTIFACT_DIR}"
    if destination.startswith("file://"):
        destination = destination[len("file://"):]
    needed = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    with writing(destination, needed, "the export's copy in the MLflow artifact store"):  # local store: DiskFull
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



def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Create ``repo_id`` (if missing) and upload ``folder``; token from HF_TOKEN or `hf auth login`."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                      commit_message="Upload CogVideoX fine-tune (cogvideox-workbench export)")
    return f"https://huggingface.co/{repo_id}"
