"""Every shipped recipe resolves through the same parser as `workbench fit` and builds: its module, data
module, callbacks, plugins and logger are constructed from it (the model's weights are not loaded; a
recipe for a GPU is built with Lightning's trainer left out, since CI has none)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.conftest import REPO
from workbench.common import is_hub_id
from workbench.train.cli import RecipeError, read_recipe

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def _build(spec: dict, **extra):
    module, name = spec["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    return cls(**{**(spec.get("init_args") or {}), **extra})


def test_every_recipe_is_tested():
    assert len(RECIPES) >= 6 and (REPO / "recipes" / "tiny-cpu.yaml") in RECIPES


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for all recipes' loggers (creating a sqlite store costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('recipes') / 'mlflow.db'}"


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_resolves_and_builds(recipe: Path, sample_data_dir, store):
    from workbench.train.datamodule import VideoDataModule
    from workbench.train.module import CogVideoXModule

    config = read_recipe(str(recipe))  # unknown keys, wrong types and unknown class paths fail here
    assert config["model"]["mode"] in ("lora", "full")
    module = CogVideoXModule(**config["model"])
    assert module.transformer is None  # nothing loaded: configure_model does that
    # The data follows the model's family; a released model's hub id names its family offline, a local name
    # (built by the caller, as tiny-cogvideox or the shapes miniature) stands for the 2B family here.
    model = config["data"]["model"]
    assert model == config["model"]["model"]  # linked from model.model
    data = VideoDataModule(**{**config["data"], "root": str(sample_data_dir), "model": model if is_hub_id(model) else None})
    assert data.hparams.num_frames == (config["data"]["num_frames"] or data.family.native.num_frames)
    trainer = config["trainer"]
    for spec in trainer.get("callbacks") or []:
        _build(spec)
    for spec in trainer.get("plugins") or []:
        _build(spec)
    logger = trainer.get("logger")
    if isinstance(logger, dict):
        mlflow = logger["class_path"].endswith("DurableMLflowLogger")
        _build(logger, **({"tracking_uri": store} if mlflow else {"save_dir": str(Path(store[10:]).parent)}))


def test_a_typo_in_a_recipe_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    recipe = (REPO / "recipes" / "tiny-cpu.yaml").read_text()
    bad.write_text(recipe.replace("\n  num_frames: 9", "\n  num_frame: 9"))  # the data section's
    with pytest.raises(RecipeError, match=r"bad.yaml: .*'num_frame'"):
        read_recipe(str(bad))
    # inside a callback's init_args jsonargparse names the cause ten lines below the key: both are in the line
    bad.write_text(recipe.replace("        num_frames: 9", "        num_frame: 9"))
    with pytest.raises(RecipeError, match=r'"trainer.callbacks".*ValidationVideos.*Option .num_frame. is not accepted'):
        read_recipe(str(bad))
    bad.write_text(recipe.replace("    rank: ", "    rank: abc #", 1))  # model.lora.rank
    with pytest.raises(RecipeError, match=r'"model.lora".*Expected a <class .int.>. Got value: abc'):
        read_recipe(str(bad))
    bad.write_text(recipe.replace("    rank: ", "    rnak: ", 1))  # a typo inside a settings group
    with pytest.raises(RecipeError, match=r"bad.yaml: .*'rnak'"):
        read_recipe(str(bad))


def test_bundled_recipes_resolve_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert read_recipe("tiny-cpu")["data"]["num_frames"] == 9


def test_a_missing_dataset_answers_before_lightning_is_imported(tmp_path):
    """`workbench fit` with a dataset folder that is not there (from the recipe or --data.root) says so in one
    line, exit 2, without waiting for Lightning and torch to import."""
    import subprocess
    import sys

    probe = ("import sys; from workbench.cli import main; rc = main(sys.argv[1:]); "
             "print('IMPORTED' if 'lightning' in sys.modules or 'torch' in sys.modules else 'LIGHT', rc)")
    for args in (["fit", "--config", "tiny-cpu"],  # the recipe's data.root: sample-data, not in tmp_path
                 ["fit", "--config", "tiny-cpu", "--data.root", str(tmp_path / "nope")],
                 ["fit", "--config", "tiny-cpu", f"--data.root={tmp_path}"]):  # a folder without a manifest
        proc = subprocess.run([sys.executable, "-c", probe, *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        assert proc.stdout.split() == ["LIGHT", "2"], (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert ("dataset folder not found" if "nope" in " ".join(args) or len(args) == 3 else "no manifest found") \
            in proc.stderr
