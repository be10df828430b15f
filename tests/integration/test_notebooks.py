"""The notebooks run top to bottom, and the repository keeps them without outputs.

Each notebook is executed by nbclient in a fresh kernel of this interpreter, with a temporary
directory as its working directory (so its WORKDIR and MLflow store land there). A failing cell
raises nbclient's CellExecutionError, which fails the test. Both fine-tune the shipped miniature of the
shapes world on the CPU (a few minutes each on 2 idle cores; the timeouts leave room for a loaded machine).
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import mlflow
import nbformat
import pytest

from tests.conftest import REPO

NOTEBOOKS = REPO / "notebooks"
NAMES = ("quickstart.ipynb", "compare_runs.ipynb")
CELL_TIMEOUT_S = 900  # the fine-tune and evaluation cells take minutes on a busy CPU
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


def outputs(nb: nbformat.NotebookNode, kind: str) -> list[str]:
    """Every output of MIME type ``kind`` (``image/png``, ``text/html``, ...), in cell order."""
    return [out["data"][kind] for cell in nb.cells for out in cell.get("outputs", []) if kind in out.get("data", {})]


def embedded_videos(nb: nbformat.NotebookNode) -> list[bytes]:
    """The mp4 files embedded in the notebook's HTML outputs (``IPython.display.Video(..., embed=True)``)."""
    html = "".join("".join(h) if isinstance(h, list) else h for h in outputs(nb, "text/html"))
    return [base64.b64decode(b) for b in re.findall(r'<video[^>]*>\s*<source src="data:video/mp4;base64,([^"]+)"', html)]


def code_cell(nb: nbformat.NotebookNode, text: str) -> nbformat.NotebookNode:
    """The one code cell whose source contains ``text``."""
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and text in c.source]
    return cell


def has_image(cell: nbformat.NotebookNode) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.outputs)


def figures_shown(nb: nbformat.NotebookNode) -> None:
    """Every cell that shows a figure or an image has a PNG output."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and ("plt.show()" in cell.source or "display(Image(" in cell.source):
            assert has_image(cell), f"cell {i} shows no image:\n{cell.source[:300]}"


HELD_OUT, PRETRAIN = "eval/shapes-held-out", "eval/shapes-pretrain"


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_quickstart_notebook_runs(tmp_path, kernel):
    nb = execute("quickstart.ipynb", tmp_path, kernel)

    figures_shown(nb)  # training clips, loss curves (overall and per timestep bucket), side by sides, frame strip
    assert len(outputs(nb, "image/png")) >= 5
    table = "".join(outputs(nb, "text/markdown"))  # the before/after table, rendered
    assert "prompt accuracy: colour" in table and "held-out: fine-tuned" in table and "pretrain: base" in table
    videos = embedded_videos(nb)  # base | fine-tuned side by side, and the video generated from the export
    assert len(videos) == 2 and all(v[4:8] == b"ftyp" and len(v) > 2000 for v in videos)

    work = tmp_path / "workbench-notebook"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    assert not (tmp_path / "mlflow.db").exists()  # nothing written to the default store
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("shapes-lora").experiment_id])
    metrics = run.data.metrics
    assert metrics.keys() >= {"train/loss", "val/loss"}
    assert len([k for k in metrics if k.startswith("val/loss_t")]) >= 2  # the per-timestep-bucket curves
    for suite in (HELD_OUT, PRETRAIN):
        for name in ("accuracy/colour", "accuracy/direction", "accuracy/all", "fvd", "clip_score"):
            assert {f"{suite}/{name}", f"{suite}/{name}_base"} <= metrics.keys(), (suite, name)
        assert metrics[f"{suite}/fvd_ci_low"] <= metrics[f"{suite}/fvd"] <= metrics[f"{suite}/fvd_ci_high"]
    # what the notebook shows happened: the fine-tune learned the colour the base model never saw
    assert metrics[f"{HELD_OUT}/accuracy/colour"] > metrics[f"{HELD_OUT}/accuracy/colour_base"]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, f"{HELD_OUT}/fvd")]
    assert steps == [int(run.data.params["trainer/max_steps"])]
    assert [v.run_id for v in client.search_model_versions("name='shapes-lora-lora'")] == [run.info.run_id]
    assert (work / "exports" / run.info.run_id / "pytorch_lora_weights.safetensors").is_file()
    for name in ("side_by_side.mp4", "grid.png"):
        assert (work / "eval" / run.info.run_id / "side-by-side" / name).stat().st_size > 0
    assert (work / "generated.mp4").is_file()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_compare_runs_notebook_runs_on_an_empty_store(tmp_path, kernel):
    nb = execute("compare_runs.ipynb", tmp_path, kernel)

    figures_shown(nb)  # loss curves, per-bucket validation loss, accuracy and FVD bars, first-frame grids
    for text in ("ax.set_title(key)", "buckets = sorted", "ax.bar(", "grid.png"):
        assert has_image(code_cell(nb, text)), text
    assert has_image(nb.cells[-1])  # the first-frame grids close the notebook
    intervals = "".join(code_cell(nb, "ax.bar(").outputs[-1]["data"].get("text/html", ""))
    assert "accuracy/colour" in intervals and "fvd" in intervals and "[" in intervals  # the intervals, as numbers

    uri = f"sqlite:///{tmp_path / 'compare-runs' / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    runs = {r.data.tags["mlflow.runName"]: r for r in client.search_runs([e.experiment_id
                                                                          for e in client.search_experiments()])}
    assert sorted(runs) == ["lr-2e-3", "lr-2e-4"]
    assert {name: float(r.data.params["model/learning_rate"]) for name, r in runs.items()} == {
        "lr-2e-3": 2e-3, "lr-2e-4": 2e-4}
    assert len({r.data.params["trainer/max_steps"] for r in runs.values()}) == 1  # the only other difference: none
    for r in runs.values():
        metrics = r.data.metrics
        for name in ("accuracy/colour", "accuracy/direction", "accuracy/all", "fvd", "fvd_ci_low", "fvd_ci_high"):
            assert f"{HELD_OUT}/{name}" in metrics, (r.data.tags["mlflow.runName"], name)
        assert len([k for k in metrics if k.startswith("val/loss_t")]) >= 2
        assert len(client.get_metric_history(r.info.run_id, "val/loss")) >= 3  # step 0 and at least two validations
        assert {a.path for a in client.list_artifacts(r.info.run_id, HELD_OUT)} >= {
            f"{HELD_OUT}/grid.png", f"{HELD_OUT}/results.json"}
    assert f"{HELD_OUT}/fvd_base" in runs["lr-2e-3"].data.metrics  # the base model, evaluated once
