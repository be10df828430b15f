"""`workbench fit` end to end in a subprocess on the tiny model and the sample data."""


import mlflow
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, fit_args, only_run, run_cli

pytestmark = pytest.mark.slow


def _fit_with_dump(workdir, tiny_model_dir, sample_data_dir, *extra):
    env = {"WORKBENCH_TEST_STATE_DUMP": str(workdir / "dump"), "PYTHONPATH": str(REPO)}
    args = fit_args(tiny_model_dir, sample_data_dir, *extra,
                    "--trainer.callbacks+=tests.helpers.state_dump.StateDump")
    run_cli(args, cwd=workdir, env=env)
    return load_file(workdir / "dump" / "start.safetensors"), load_file(workdir / "dump" / "end.safetensors")


def _changed(start, end, keys):
    return {k for k in keys if not torch.equal(start[k], end[k])}


def _disk_weights(model_dir, sub):
    from safetensors.torch import load_file as lf

    files = sorted((model_dir / sub).glob("*.safetensors"))
    out = {}
    for f in files:
        out.update(lf(f))
    return out


def test_lora_fit_learns_logs_and_trains_only_lora(tmp_path, tiny_model_dir, sample_data_dir):
    start, end = _fit_with_dump(tmp_path, tiny_model_dir, sample_data_dir)

    # Only LoRA tensors changed; VAE, T5 and the base transformer are bit-identical.
    lora = {k for k in start if "lora_" in k}
    frozen = set(start) - lora
    assert lora and all(k.startswith("transformer.") for k in lora)
    assert _changed(start, end, frozen) == set()
    assert _changed(start, end, lora) == {k for k in lora if "lora_B" in k or "lora_A" in k}
    assert any(k.startswith("vae.") for k in frozen) and any(k.startswith("text_encoder.") for k in frozen)
    # ...and the frozen weights in memory are the ones on disk (loaded, not re-initialised).
    disk_vae = _disk_weights(tiny_model_dir, "vae")
    for k, v in disk_vae.items():
        torch.testing.assert_close(end[f"vae.{k}"], v.float(), rtol=0, atol=0)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = only_run(uri)
    client = mlflow.MlflowClient(uri)
    val = client.get_metric_history(run.info.run_id, "val/loss")
    steps = sorted((m.step, m.value) for m in val)
    assert steps[0][0] == 0 and len(steps) >= 3
    first, last = steps[0][1], steps[-1][1]
    assert last < 0.9 * first, f"val loss did not fall by a clear margin: {steps}"

    # params: the full resolved recipe
    params = run.data.params
    assert params["model/mode"] == "lora" and params["model/lora/rank"] == "16"
    assert params["data/num_frames"] == "9" and "trainer/max_steps" in params
    # metrics
    for key in ("train/loss", "lr-AdamW", "perf/step_time_s", "perf/samples_per_s"):
        assert key in run.data.metrics, key
    # artifacts: the recipe and mp4 sample videos
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "recipe")}
    assert "recipe/config.yaml" in arts
    sample_dirs = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert sample_dirs
    videos = [a for a in client.list_artifacts(run.info.run_id, sample_dirs[-1]) if a.path.endswith(".mp4")]
    assert len(videos) == 2 and all(v.file_size > 0 for v in videos)
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=videos[0].path,
                                                tracking_uri=uri, dst_path=str(tmp_path / "dl"))
    from workbench.data.video import probe

    info = probe(local)
    assert (info.num_frames, info.height, info.width) == (9, 64, 64)

    # checkpoints: only the trained tensors, in the run's own directory
    ckpt = tmp_path / "runs" / run.info.run_id / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert set(state) == lora


def test_full_fit_trains_transformer_only(tmp_path, tiny_model_dir, sample_data_dir):
    start, end = _fit_with_dump(tmp_path, tiny_model_dir, sample_data_dir, "--model.mode", "full",
                                "--model.learning_rate", "1e-4", "--trainer.max_steps", "4")
    transformer = {k for k in start if k.startswith("transformer.")}
    others = set(start) - transformer
    assert not any("lora_" in k for k in start)
    assert _changed(start, end, others) == set()
    changed = _changed(start, end, transformer)
    assert len(changed) > 0.9 * len(transformer), f"{len(changed)}/{len(transformer)} transformer tensors changed"


def test_resume_from_checkpoint(tmp_path, trained_lora_run, tiny_model_dir, sample_data_dir):
    ckpt = trained_lora_run["checkpoint"]
    assert ckpt.is_file()
    run_cli(fit_args(tiny_model_dir, sample_data_dir, "--trainer.max_steps", "20", "--ckpt_path", str(ckpt)),
            cwd=tmp_path)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 16
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = only_run(uri)
    hist = mlflow.MlflowClient(uri).get_metric_history(run.info.run_id, "train/loss")
    assert max(m.step for m in hist) >= 17  # training went on from step 16 to 20


def test_bad_recipe_values_fail_clearly(tmp_path, tiny_model_dir, sample_data_dir):
    proc = run_cli(fit_args(tiny_model_dir, sample_data_dir, "--data.num_frames", "10"), cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "4k+1" in proc.stderr
    proc = run_cli(fit_args(tiny_model_dir, tmp_path / "nope"), cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "dataset folder not found" in proc.stderr
