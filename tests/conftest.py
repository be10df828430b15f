"""Session fixtures: the tiny model and sample data are built once and shared by every test.

Integration tests run the ``workbench`` CLI in a subprocess, as a user would, against a real
MLflow sqlite store in a temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Under pytest-xdist (the README's test command runs two workers on the 2-core CI machine) each worker and
# every CLI subprocess it starts computes on one thread: two workers of two threads each would oversubscribe
# the cores. Set before torch is imported, and inherited by the subprocesses.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "recipes" / "tiny-cpu.yaml"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random CogVideoX saved in diffusers layout (built once per session)."""
    from workbench.model.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-cogvideox")


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory) -> Path:
    """The bundled sample dataset (8 clips of moving shapes, metadata.jsonl)."""
    from workbench.shapes.sample_dataset import make_sample_dataset

    return make_sample_dataset(tmp_path_factory.mktemp("data") / "sample")


@pytest.fixture(scope="session")
def metric_standins(tmp_path_factory) -> dict:
    """Tiny random CLIP (save_pretrained dir) and I3D (TorchScript) with the real interfaces."""
    from workbench.metrics.standins import build_tiny_clip, build_tiny_i3d

    root = tmp_path_factory.mktemp("metric-standins")
    return {"clip": build_tiny_clip(root / "tiny-clip"), "i3d": build_tiny_i3d(root / "tiny-i3d.pt"),
            "cache": root / "fvd-cache"}


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600, check: bool = True):
    """Run ``python -m workbench.cli ARGS`` in a subprocess; return the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the test's own store
    full_env.update({"PYTHONUNBUFFERED": "1", **(env or {})})
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"workbench {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-8000:]}")
    return proc


def fit_args(model_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    """``workbench fit`` on the tiny recipe against a given model and dataset."""
    return ["fit", "--config", str(TINY_RECIPE), "--model.model", str(model_dir), "--data.root", str(data_dir),
            "--trainer.default_root_dir", "runs", *extra]


def only_run(tracking_uri: str, experiment: str = "tiny-cpu"):
    """The single MLflow run of ``experiment`` in the store."""
    import mlflow

    runs = mlflow.MlflowClient(tracking_uri).search_runs(
        [mlflow.MlflowClient(tracking_uri).get_experiment_by_name(experiment).experiment_id]
    )
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


@pytest.fixture(scope="session")
def trained_lora_run(tmp_path_factory, tiny_model_dir, sample_data_dir) -> dict:
    """One short LoRA fine-tune through the CLI, shared by the tests that need a checkpoint.

    Returns {workdir, tracking_uri, run_id, run_dir, checkpoint}.
    """
    work = tmp_path_factory.mktemp("lora-run")
    run_cli(fit_args(tiny_model_dir, sample_data_dir, "--trainer.max_steps", "16"), cwd=work)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    run = only_run(uri)
    run_dir = work / "runs" / run.info.run_id
    info = {"workdir": work, "tracking_uri": uri, "run_id": run.info.run_id, "run_dir": run_dir,
            "checkpoint": run_dir / "checkpoints" / "last.ckpt"}
    (work / "run.json").write_text(json.dumps({k: str(v) for k, v in info.items()}))
    return info
