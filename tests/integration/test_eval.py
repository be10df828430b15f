"""`workbench eval` and the SuiteEvaluation callback on the tiny model with tiny metric stand-ins."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest

from tests.conftest import REPO, fit_args, only_run, run_cli

SMOKE = REPO / "evals" / "suites" / "smoke.yaml"

pytestmark = pytest.mark.filterwarnings("ignore:FVD .* rank-deficient:UserWarning")


def standin_args(standins: dict, reference: Path) -> list[str]:
    return ["--clip-model", str(standins["clip"]), "--fvd-detector", str(standins["i3d"]),
            "--reference", str(reference), "--cache-dir", str(standins["cache"])]


def artifact_paths(client, run_id: str, path: str = "") -> set[str]:
    out = set()
    for a in client.list_artifacts(run_id, path or None):
        out |= artifact_paths(client, run_id, a.path) if a.is_dir else {a.path}
    return out


# -- end to end ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_eval_pipeline_dir_creates_eval_run(tmp_path, tiny_model_dir, sample_data_dir, metric_standins):
    out = tmp_path / "out"
    proc = run_cli(["eval", "--suite", str(SMOKE), "--model", str(tiny_model_dir), "--out", str(out),
                    *standin_args(metric_standins, sample_data_dir)], cwd=tmp_path)
    assert "eval/clip_score" in proc.stdout and "eval/fvd" in proc.stdout

    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["eval/num_videos"] == 6 and results["metrics"]["eval/num_reference_videos"] == 8
    assert len(results["videos"]) == 6 and all(v["clip_score"] >= 0 for v in results["videos"])
    assert {(v["prompt_index"], v["seed"]) for v in results["videos"]} == {(i, s) for i in range(3) for s in (0, 1)}
    from workbench.data.video import probe

    info = probe(out / results["videos"][0]["path"])
    assert (info.num_frames, info.height, info.width) == (17, 64, 64)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = only_run(uri, experiment="workbench-eval")
    assert run.info.status == "FINISHED"
    # results.json keeps the suite's own names; MLflow names each suite's metrics eval/<suite>/...
    assert run.data.metrics["eval/smoke/clip_score"] == pytest.approx(results["metrics"]["eval/clip_score"])
    assert run.data.metrics["eval/smoke/fvd"] == pytest.approx(results["metrics"]["eval/fvd"])
    assert run.data.params["eval/smoke/num_frames"] == "17" and run.data.params["model"] == str(tiny_model_dir)
    client = mlflow.MlflowClient(uri)
    arts = artifact_paths(client, run.info.run_id)
    assert {"eval/smoke/results.json", "eval/smoke/results.md", "eval/smoke/grid.png",
            "eval/smoke/suite.yaml"} <= arts
    assert len([a for a in arts if a.startswith("eval/smoke/videos/") and a.endswith(".mp4")]) == 6
    assert list(metric_standins["cache"].glob("fvd-ref-smoke-*.safetensors"))


@pytest.mark.slow
def test_eval_training_run_compare_base_attaches_to_run(tmp_path, trained_lora_run, sample_data_dir,
                                                        metric_standins):
    uri = trained_lora_run["tracking_uri"]
    out = tmp_path / "out"
    run_cli(["eval", "--suite", str(SMOKE), "--model", trained_lora_run["run_id"], "--compare-base",
             "--out", str(out), "--tracking-uri", uri, *standin_args(metric_standins, sample_data_dir)], cwd=tmp_path)

    client = mlflow.MlflowClient(uri)
    run_id = trained_lora_run["run_id"]
    for key in ("eval/smoke/clip_score", "eval/smoke/fvd", "eval/smoke/clip_score_base", "eval/smoke/fvd_base"):
        history = client.get_metric_history(run_id, key)
        assert [m.step for m in history] == [16], key  # the checkpoint's global step
    assert client.get_experiment_by_name("workbench-eval") is None  # nothing new: results are on the training run
    arts = artifact_paths(client, run_id, "eval")
    assert {"eval/smoke/results.json", "eval/smoke/grid.png"} <= arts
    assert len([a for a in arts if a.startswith("eval/smoke/videos/") and a.endswith(".mp4")]) == 6
    assert len([a for a in arts if a.startswith("eval/smoke/videos_base/") and a.endswith(".mp4")]) == 6

    results = json.loads((out / "results.json").read_text())
    assert results["run_id"] == run_id and results["global_step"] == 16
    assert all(v["base_path"] == v["path"].replace("videos/", "videos_base/") for v in results["videos"])
    # Same seeds, different models: the fine-tune changed what was generated.
    assert any(abs(v["clip_score"] - v["base_clip_score"]) > 1e-6 for v in results["videos"])
    from PIL import Image

    grid = Image.open(out / "grid.png")
    assert grid.width >= 2 * 64 and grid.height >= 3 * 64  # columns base | fine-tuned, one row per prompt


@pytest.mark.slow
def test_suite_evaluation_callback_logs_during_fit(tmp_path, tiny_model_dir, sample_data_dir, metric_standins):
    run_cli(fit_args(tiny_model_dir, sample_data_dir, "--trainer.max_steps", "4",
                     "--trainer.check_val_every_n_epoch", "1",
                     "--trainer.callbacks+=workbench.eval.callback.SuiteEvaluation",
                     f"--trainer.callbacks.suite={SMOKE}",
                     f"--trainer.callbacks.clip_model={metric_standins['clip']}",
                     f"--trainer.callbacks.fvd_detector={metric_standins['i3d']}",
                     f"--trainer.callbacks.reference={sample_data_dir}",
                     f"--trainer.callbacks.cache_dir={metric_standins['cache']}"), cwd=tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = only_run(uri)
    client = mlflow.MlflowClient(uri)
    for key in ("eval/smoke/clip_score", "eval/smoke/fvd"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [4], key
    arts = artifact_paths(client, run.info.run_id, "eval")
    assert "eval/smoke/step_000004/results.json" in arts
    assert len([a for a in arts if a.endswith(".mp4")]) == 6
    assert (tmp_path / "runs" / run.info.run_id / "eval" / "smoke" / "step_000004" / "results.json").is_file()


# -- bad input: a clear error before anything is generated -----------------------------------------
def _eval_in_process(args: list[str], capsys) -> tuple[int, str]:
    from workbench.cli import main

    rc = main(["eval", *args])
    return rc, capsys.readouterr().err


def _one_video_reference(root: Path, sample: Path) -> Path:
    root.mkdir()
    (root / "videos").mkdir()
    first = json.loads((sample / "metadata.jsonl").read_text().splitlines()[0])
    shutil.copy(sample / first["file_name"], root / first["file_name"])
    (root / "metadata.jsonl").write_text(json.dumps(first) + "\n")
    return root


def _suite_copy(tmp_path: Path, **changes) -> Path:
    import yaml

    data = yaml.safe_load(SMOKE.read_text())
    data.update(changes)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("problem", ["detector", "clip", "no_prompts", "few_reference", "no_reference",
                                     "short_frames", "bad_model"])
def test_bad_input_fails_before_generation(problem, tmp_path, tiny_model_dir, sample_data_dir, metric_standins,
                                           capsys):
    suite, model = SMOKE, str(tiny_model_dir)
    clip, i3d, reference = str(metric_standins["clip"]), str(metric_standins["i3d"]), str(sample_data_dir)
    expected = {
        "detector": "tiny-i3d-missing.pt",
        "clip": "CLIP model",
        "no_prompts": "no prompts",
        "few_reference": "at least 2 real videos",
        "no_reference": "folder not found",
        "short_frames": "16-frame clips",
        "bad_model": "neither a checkpoint",
    }[problem]
    if problem == "detector":
        i3d = str(tmp_path / "tiny-i3d-missing.pt")
    elif problem == "clip":
        clip = str(tmp_path / "no-such-clip")
    elif problem == "no_prompts":
        suite = _suite_copy(tmp_path, prompts=[])
    elif problem == "few_reference":
        reference = str(_one_video_reference(tmp_path / "one", sample_data_dir))
    elif problem == "no_reference":
        reference = str(tmp_path / "no-such-data")
    elif problem == "short_frames":
        suite = _suite_copy(tmp_path, num_frames=13)
    elif problem == "bad_model":
        model = str(tmp_path)
    out = tmp_path / "out"
    rc, err = _eval_in_process(["--suite", str(suite), "--model", model, "--out", str(out), "--clip-model", clip,
                                "--fvd-detector", i3d, "--reference", reference, "--no-mlflow",
                                "--cache-dir", str(tmp_path / "cache")], capsys)
    assert rc != 0
    assert err.startswith("error: ") and expected in err, err
    assert not out.exists() or not list(out.rglob("*.mp4"))


def test_reference_statistics_cached_and_keyed(tmp_path, sample_data_dir, metric_standins):
    from workbench.eval.reference import load_suite_metrics
    from workbench.eval.suite import load_suite

    suite = load_suite(SMOKE).with_overrides(clip_model=str(metric_standins["clip"]),
                                             fvd_detector=metric_standins["i3d"], reference=sample_data_dir)
    first = load_suite_metrics(suite, cache_dir=tmp_path)
    mtime = first.cache_path.stat().st_mtime_ns
    again = load_suite_metrics(suite, cache_dir=tmp_path)
    assert again.cache_path == first.cache_path and again.cache_path.stat().st_mtime_ns == mtime
    assert first.reference_videos == 8
    other = load_suite_metrics(suite.with_overrides(height=48), cache_dir=tmp_path)
    assert other.cache_path != first.cache_path  # size is part of the key
    assert len(list(tmp_path.glob("fvd-ref-smoke-*.safetensors"))) == 2
