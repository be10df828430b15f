"""The notebooks run top to bottom, and the repository keeps them without outputs.

Each notebook is executed by nbclient in a fresh kernel of this interpreter, with a temporary
directory as its working directory (so its WORKDIR and MLflow store land there). A failing cell
raises nbclient's CellExecutionError, which fails the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import nbformat
import pytest

from tests.conftest import REPO

NOTEBOOKS = REPO / "notebooks"
NAMES = ("quickstart.ipynb", "compare_runs.ipynb")
CELL_TIMEOUT_S = 300
KERNEL = "workbench-test-python"


# -- stored without outputs --------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [] and cell.execution_count is None, (
            f"notebooks/{name}, cell {i}: has outputs; clear them before committing "
            f"(jupyter nbconvert --clear-output --inplace notebooks/{name})")
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "WORKDIR" in tagged[0].source, f"notebooks/{name}: one 'parameters' cell with WORKDIR"


# -- executed ----------------------------------------------------------------------------------------
@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec for this very interpreter in a temporary JUPYTER_PATH.

    A ``python3`` kernel found in the user's Jupyter folders may belong to another Python, without
    the workbench installed; this one is always the Python running the tests.
    """
    jupyter = tmp_path / "jupyter"
    spec = jupyter / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "workbench tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user profile or startup files
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # each notebook uses the store in its WORKDIR
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, so figures become outputs
    from jupyter_client.kernelspec import KernelSpecManager

    assert KernelSpecManager().get_kernel_spec(KERNEL).argv[0] == sys.executable
    return KERNEL


def execute(name: str, cwd: Path, kernel: str) -> nbformat.NotebookNode:
    """Run every cell of notebooks/NAME in ``cwd``; raises CellExecutionError on the first failing cell."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, kernel_name=kernel, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def output_types(nb: nbformat.NotebookNode) -> set[str]:
    kinds = set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            kinds |= set(out.get("data", {}))
    return kinds


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quickstart_notebook_runs(tmp_path, kernel):
    nb = execute("quickstart.ipynb", tmp_path, kernel)

    kinds = output_types(nb)
    assert "image/png" in kinds  # loss curve, eval grid, frame strip
    html = "".join(out["data"].get("text/html", "") for c in nb.cells for out in c.get("outputs", [])
                   if "data" in out)
    assert "<video" in html and "data:video/mp4;base64," in html  # the generated video, embedded

    work = tmp_path / "workbench-notebook"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    assert not (tmp_path / "mlflow.db").exists()  # nothing written to the default store
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tiny-cpu").experiment_id])
    assert run.data.metrics.keys() >= {"train/loss", "val/loss", "eval/fvd", "eval/clip_score"}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/fvd")] == [16]
    assert [v.run_id for v in client.search_model_versions("name='tiny-cpu-lora'")] == [run.info.run_id]
    assert (work / "exports" / run.info.run_id / "pytorch_lora_weights.safetensors").is_file()
    assert (work / "generated.mp4").is_file()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compare_runs_notebook_runs_on_an_empty_store(tmp_path, kernel):
    nb = execute("compare_runs.ipynb", tmp_path, kernel)

    assert "image/png" in output_types(nb)  # loss curves, metric bars, first-frame grid
    uri = f"sqlite:///{tmp_path / 'compare-runs' / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.data.tags["mlflow.runName"] for r in runs) == ["lr-2e-3", "lr-5e-4"]
    assert all({"eval/fvd", "eval/clip_score"} <= r.data.metrics.keys() for r in runs)
    grid_cell = nb.cells[-1]
    assert any("image/png" in out.get("data", {}) for out in grid_cell.outputs)
