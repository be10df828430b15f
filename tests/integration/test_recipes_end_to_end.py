"""Every bundled recipe through `prepare`, `data check` and `fit --print_config`, in-process through
``workbench.cli.main`` as the CLI runs them: each succeeds, or ends in one ``error:`` line with exit 2, never a
traceback. The GPU recipes name hub models that cannot be downloaded here, so each runs on a tiny random model of
its recipe's family, at a tiny clip (9 frames, 64x64, 8 fps): prepare encodes one range of a short clip, data check
reads the clip and that range."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers.clips import shape_clip
from workbench.cli import main

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
TINY_CLIP = ["--num-frames", "9", "--height", "64", "--width", "64", "--fps", "8"]


def recipe_family(recipe: dict) -> str:
    """The model family a recipe trains: model.family, else read from its model id (the shapes miniature and the
    tiny model are CogVideoX-2B-shaped)."""
    model = recipe.get("model") or {}
    if model.get("family"):
        return model["family"]
    name = str(model.get("model", "")).lower()
    family = "cogvideox1.5-5b" if "1.5" in name else "cogvideox-5b" if "5b" in name else "cogvideox-2b"
    return family + ("-i2v" if "i2v" in name else "")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """One tiny random model per family, built when a recipe first needs it."""
    from workbench.model.tiny import save_tiny_model

    root, built = tmp_path_factory.mktemp("family-models"), {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = save_tiny_model(root / family, family=family)
        return built[family]
    return get


@pytest.fixture(scope="module")
def short_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("short-data")
    shape_clip(root / "videos" / "a.mp4", frames=24, fps=16)
    (root / "metadata.jsonl").write_text(
        json.dumps({"file_name": "videos/a.mp4", "caption": "a red circle moving from left to right"}) + "\n" +
        json.dumps({"source": "videos/a.mp4", "start": 0.25, "end": 1.4375, "caption": "the middle of it"}) + "\n")
    return root


@pytest.fixture(scope="module")
def one_range(short_data, tmp_path_factory) -> Path:
    """What prepare encodes (one clip keeps each recipe's run short): one range of the same clip, its footage
    found through split.json."""
    root = tmp_path_factory.mktemp("one-range")
    (root / "split.json").write_text(json.dumps({"footage_root": str(short_data / "videos")}))
    (root / "metadata.jsonl").write_text(json.dumps({"source": "a.mp4", "start": 0.25, "end": 1.4375,
                                                     "caption": "the middle of it"}) + "\n")
    return root


def one_line_or_success(rc: int, err: str, what: str) -> None:
    assert "Traceback" not in err, f"{what}: {err[-3000:]}"
    if rc != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc in (1, 2), f"{what}: exit {rc}: {err[-3000:]}"
        assert rc != 2 or (len(lines) == 1 and lines[0].startswith("error: ")), f"{what}: {err[-3000:]}"


@pytest.mark.parametrize("recipe_path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_prepares_checks_and_prints(recipe_path, tiny_models, short_data, one_range, tmp_path, capsys,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a command writes by default lands here
    recipe = yaml.safe_load(recipe_path.read_text())
    model = tiny_models(recipe_family(recipe))
    buckets = ["--buckets", "64x64,64x96"] if (recipe.get("data") or {}).get("buckets") else []

    rc = main(["prepare", "--config", str(recipe_path), "--model", str(model), "--root", str(one_range),
               "--cache", str(tmp_path / "cache"), *TINY_CLIP, *buckets, "--device", "cpu", "--dtype", "fp32"])
    out, err = capsys.readouterr()
    one_line_or_success(rc, err, "prepare")
    assert rc == 0 and "1/1 samples" in out, err

    checked = recipe_path
    if buckets:  # data check has no --buckets: the recipe's own would not fit the tiny model's rotary grid (1.5)
        checked = tmp_path / recipe_path.name
        checked.write_text(yaml.safe_dump({**recipe, "data": {**recipe["data"], "buckets": [[64, 64], [64, 96]]}}))
    rc = main(["data", "check", str(short_data), "--recipe", str(checked), "--model", str(model), *TINY_CLIP,
               "--out", str(tmp_path / "check"), "--jobs", "1"])
    out, err = capsys.readouterr()
    one_line_or_success(rc, err, "data check")
    assert rc == 0, out + err
    report = json.loads((tmp_path / "check" / "report.json").read_text())
    assert [s["file"] for s in report["samples"]] == ["videos/a.mp4", "videos/a.mp4@0.250-1.438"]

    with pytest.raises(SystemExit) as stop:  # LightningCLI prints the config and exits
        main(["fit", "--config", str(recipe_path), "--model.model", str(model), "--data.root", str(short_data),
              "--data.num_frames", "9", "--data.height", "64", "--data.width", "64", "--data.fps", "8",
              "--print_config"])
    out, err = capsys.readouterr()
    one_line_or_success(stop.value.code or 0, err, "fit --print_config")
    assert (stop.value.code or 0) == 0 and yaml.safe_load(out)["model"]["model"] == str(model)


def test_prepare_of_the_tiny_recipe_with_no_speed_block(tiny_models, one_range, tmp_path, capsys):
    """The reported bug: `prepare --config recipes/tiny-cpu.yaml --cache auto` ended in a TypeError (model.speed is
    None when a recipe has no speed: block)."""
    model = tiny_models("cogvideox-2b")
    rc = main(["prepare", "--config", str(REPO / "recipes" / "tiny-cpu.yaml"), "--model", str(model),
               "--root", str(one_range), "--cache", "auto", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert rc == 0 and "1/1 samples" in out, err
    assert list((one_range / ".workbench-cache").iterdir())
