"""Two processes (DDP over gloo, CPU) train and evaluate exactly like one process with the same
global batch: the same samples per step (GlobalBatchSampler), the same per-sample random draws,
gradients averaged, and suite metrics reduced across processes by torchmetrics' sync."""

import mlflow
import pytest
import torch

from tests.conftest import REPO, fit_args, only_run, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:FVD .* rank-deficient:UserWarning")]

SMOKE = REPO / "evals" / "suites" / "smoke.yaml"


def _suite(tmp_path):
    """The smoke suite with pipeline batches of 2 videos, so two processes share its 3 batches."""
    import yaml

    suite = yaml.safe_load(SMOKE.read_text())
    suite.update(batch_size=2, reference=None, clip_model=None, fvd_detector=None)
    path = tmp_path / "smoke-b2.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in suite.items() if v is not None}))
    return path


def _fit(workdir, model, data, standins, *extra):
    workdir.mkdir()
    run_cli(fit_args(model, data, "--trainer.max_steps", "8", "--trainer.log_every_n_steps", "1",
                     "--trainer.check_val_every_n_epoch", "2",
                     "--trainer.callbacks+=workbench.eval.callback.SuiteEvaluation",
                     f"--trainer.callbacks.suite={_suite(workdir.parent)}",
                     f"--trainer.callbacks.clip_model={standins['clip']}",
                     f"--trainer.callbacks.fvd_detector={standins['i3d']}",
                     f"--trainer.callbacks.reference={data}", f"--trainer.callbacks.cache_dir={standins['cache']}",
                     *extra), cwd=workdir)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    run = only_run(uri)
    client = mlflow.MlflowClient(uri)
    history = {k: [m.value for m in sorted(client.get_metric_history(run.info.run_id, k), key=lambda m: m.step)]
               for k in ("train/loss", "val/loss", "eval/smoke/clip_score", "eval/smoke/fvd")}
    ckpt = workdir / "runs" / run.info.run_id / "checkpoints" / "last.ckpt"
    return history, torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_two_process_ddp_matches_one_process(tmp_path, tiny_model_dir, sample_data_dir, metric_standins):
    one, w1 = _fit(tmp_path / "one", tiny_model_dir, sample_data_dir, metric_standins, "--data.batch_size", "2")
    two, w2 = _fit(tmp_path / "two", tiny_model_dir, sample_data_dir, metric_standins, "--data.batch_size", "1",
                   "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.use_distributed_sampler", "false")
    assert len(one["train/loss"]) == len(two["train/loss"]) == 8
    assert len(one["eval/smoke/fvd"]) == len(two["eval/smoke/fvd"]) == 1
    # Tolerance: float32 round-off of the gradient all-reduce (summation order) only.
    torch.testing.assert_close(torch.tensor(two["train/loss"]), torch.tensor(one["train/loss"]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(two["val/loss"]), torch.tensor(one["val/loss"]), rtol=1e-5, atol=1e-6)
    assert set(w1) == set(w2)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-6)
    # Eval: the processes split the suite's pipeline batches and torchmetrics gathers their states.
    # A missing process's share would move CLIP by ~10% and FVD by ~1e-3 here; what remains is the
    # weights' all-reduce round-off carried into the videos (observed 1.4e-6 relative), hence 1e-5.
    for key in ("eval/smoke/clip_score", "eval/smoke/fvd"):
        torch.testing.assert_close(torch.tensor(two[key]), torch.tensor(one[key]), rtol=1e-5, atol=0)
