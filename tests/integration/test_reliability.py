"""Reliability end to end, in subprocesses on the tiny model: a run killed with SIGKILL and resumed ends
where an uninterrupted one does; a NaN step is skipped or stops the run; a real MLflow server dying
mid-run loses no metric; two runs share one sqlite store; pickle files are refused where weights are read.

(The fuzz tests of the data loader are tests/unit/test_data_check.py and tests/integration/test_bad_samples.py.)
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from tests.conftest import REPO, fit_args, only_run, run_cli

pytestmark = pytest.mark.slow

FAST_ENV = {"PYTHONPATH": str(REPO), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def _recipe(path: Path, *, max_steps: int, every: int = 3, policy: str = "skip", extra: list | None = None,
            logger: dict | None = None) -> Path:
    """A recipe override: checkpoints every ``every`` steps, metrics every step, no sample videos."""
    callbacks = [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"save_last": True, "every_n_train_steps": every, "save_top_k": -1}},
        {"class_path": "workbench.train.guards.NonFiniteGuard", "init_args": {"policy": policy}},
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "step"}},
        {"class_path": "workbench.train.callbacks.StepStats"},
        *(extra or []),
    ]
    trainer = {"max_steps": max_steps, "log_every_n_steps": 1, "callbacks": callbacks}
    if logger:
        trainer["logger"] = {"class_path": "workbench.tracking.logger.DurableMLflowLogger",
                             "init_args": {"experiment_name": "tiny-cpu", **logger}}
    path.write_text(yaml.safe_dump({"trainer": trainer}))
    return path


def _popen(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """``workbench ARGS`` started in a subprocess (as tests.conftest.run_cli, without waiting)."""
    cwd.mkdir(parents=True, exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update({"PYTHONUNBUFFERED": "1", **FAST_ENV, **(env or {})})
    return subprocess.Popen([sys.executable, "-m", "workbench.cli", *args], cwd=cwd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: int = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _ok(proc: subprocess.Popen) -> str:
    rc, out, err = _finish(proc)
    assert rc == 0, f"exit {rc}:\n{out[-3000:]}\n{err[-6000:]}"
    return err


def _run_dir(workdir: Path) -> Path:
    (run,) = [p for p in (workdir / "runs").iterdir() if p.is_dir()]
    return run


def _wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{proc.stderr.read()[-6000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _checkpoints(workdir: Path) -> list[Path]:
    return sorted((workdir / "runs").glob("*/checkpoints/*.ckpt")) if (workdir / "runs").is_dir() else []


def _metric_counts(uri: str, run_id: str) -> tuple[Counter, dict]:
    """(key, step) -> how many values the run holds, and key -> [(step, value)]."""
    client = mlflow.MlflowClient(uri)
    counts, histories = Counter(), {}
    for key in client.get_run(run_id).data.metrics:
        history = client.get_metric_history(run_id, key)
        histories[key] = sorted((m.step, m.value) for m in history)
        counts.update((key, m.step) for m in history)
    return counts, histories


def _trained(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


# -- 1. kill and resume ----------------------------------------------------------------------------
def test_sigkilled_run_resumes_to_the_same_weights_and_mlflow_run(tmp_path, tiny_model_dir, sample_data_dir):
    """SIGKILL at a random moment after the first checkpoint, resume from last.ckpt: the final LoRA
    tensors equal an uninterrupted run's (torch.equal), the MLflow run is the same one and every
    (metric, step) holds as many values as in the uninterrupted run."""
    steps = 24
    recipe = _recipe(tmp_path / "every3.yaml", max_steps=steps)
    slow = _recipe(tmp_path / "every3-slow.yaml", max_steps=steps,
                   extra=[{"class_path": "tests.helpers.faults.SlowSteps", "init_args": {"seconds": 0.25}}])
    ref_dir, work = tmp_path / "uninterrupted", tmp_path / "killed"
    ref = _popen(fit_args(tiny_model_dir, sample_data_dir, "--config", str(recipe)), ref_dir)
    victim = _popen(fit_args(tiny_model_dir, sample_data_dir, "--config", str(slow)), work)

    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0.0, 3.0)  # the run has ~5 s of steps left after its first checkpoint
    _wait_for(lambda: any(p.name == "last.ckpt" for p in _checkpoints(work)), 240, "the first checkpoint", victim)
    time.sleep(delay)
    victim.send_signal(signal.SIGKILL)
    rc, _, _ = _finish(victim)
    assert rc == -signal.SIGKILL, f"the run ended before it was killed (seed {seed}, delay {delay:.2f} s)"
    run_dir = _run_dir(work)
    last = run_dir / "checkpoints" / "last.ckpt"
    killed_at = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 3 <= killed_at < steps

    run_cli(fit_args(tiny_model_dir, sample_data_dir, "--config", str(recipe), "--ckpt_path", str(last)),
            cwd=work, env=FAST_ENV)
    _ok(ref)

    ref_last = _run_dir(ref_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == steps
    expected, resumed = _trained(ref_last), _trained(last)
    assert expected.keys() == resumed.keys() and any("lora_" in k for k in expected)
    different = [k for k in expected if not torch.equal(expected[k], resumed[k])]
    assert not different, f"resumed from step {killed_at} (seed {seed}): {len(different)} tensors differ, " \
                          f"e.g. {different[:2]}"

    uri, ref_uri = f"sqlite:///{work / 'mlflow.db'}", f"sqlite:///{ref_dir / 'mlflow.db'}"
    run, ref_run = only_run(uri), only_run(ref_uri)  # one run: the resume continued it
    assert run.info.run_id == run_dir.name and run.info.status == "FINISHED"
    assert run.data.tags["workbench.resumed_from_step"] == str(killed_at)
    counts, histories = _metric_counts(uri, run.info.run_id)
    ref_counts, ref_histories = _metric_counts(ref_uri, ref_run.info.run_id)
    assert counts == ref_counts, f"(metric, step) counts differ: {sorted((counts - ref_counts).items())[:5]} " \
                                 f"extra, {sorted((ref_counts - counts).items())[:5]} missing"
    for key in ("train/loss", "lr-AdamW"):
        assert histories[key] == ref_histories[key], key
    assert [s for s, _ in histories["train/loss"]] == list(range(steps))


# -- 2. (atomic checkpoints: tests/unit/test_reliability.py) 3. the non-finite guard -----------------
def test_nan_step_is_skipped_or_stops_the_run(tmp_path, tiny_model_dir, sample_data_dir):
    nan = [{"class_path": "tests.helpers.faults.NaNAtStep", "init_args": {"step": 5}}]
    skip = _popen(fit_args(tiny_model_dir, sample_data_dir, "--config",
                           str(_recipe(tmp_path / "skip.yaml", max_steps=8, every=4, extra=nan))), tmp_path / "skip")
    stop = _popen(fit_args(tiny_model_dir, sample_data_dir, "--config",
                           str(_recipe(tmp_path / "stop.yaml", max_steps=8, every=4, policy="stop", extra=nan))),
                  tmp_path / "stop")

    err = _ok(skip)
    assert "skipped the update at global step 5" in err
    uri = f"sqlite:///{tmp_path / 'skip' / 'mlflow.db'}"
    run = only_run(uri)
    _, histories = _metric_counts(uri, run.info.run_id)
    assert histories["train/skipped_steps"] == [(5, 1.0)]
    final = torch.load(_run_dir(tmp_path / "skip") / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=True)
    assert final["global_step"] == 8 and all(torch.isfinite(v).all() for v in final["state_dict"].values())

    rc, _, err = _finish(stop)
    assert rc == 1, err[-3000:]
    assert "error: non-finite loss at global step 5" in err and "Traceback" not in err.split("error: ")[-1]
    last = _run_dir(tmp_path / "stop") / "checkpoints" / "last.ckpt"
    assert f"The last good checkpoint is {last.relative_to(tmp_path / 'stop')}" in err
    good = torch.load(last, map_location="cpu", weights_only=True)
    assert good["global_step"] == 4 and all(torch.isfinite(v).all() for v in good["state_dict"].values())
    assert only_run(f"sqlite:///{tmp_path / 'stop' / 'mlflow.db'}").info.status == "FAILED"


# -- 4. the MLflow server dies mid-run -------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A real ``mlflow server`` on loopback over a sqlite store, started and killed by the test."""

    def __init__(self, root: Path):
        self.root, self.port = root, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
        self.proc = subprocess.Popen(
            [mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def wait_up(self, timeout: float = 120) -> None:
        import urllib.request

        def up():
            try:
                return urllib.request.urlopen(f"{self.uri}/health", timeout=1).status == 200
            except OSError:
                return False

        _wait_for(up, timeout, "the MLflow server")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its uvicorn workers (its own session)
            self.proc.wait()


def test_mlflow_server_dying_mid_run_loses_no_metric(tmp_path, tiny_model_dir, sample_data_dir):
    """The server is killed during training and stays down to the end: the run finishes, says what was
    not sent and how to send it; once the server is back, ``workbench tracking sync`` completes the run."""
    server = _Server(tmp_path)
    server.start()
    try:
        server.wait_up()
        steps = 12
        recipe = _recipe(tmp_path / "server.yaml", max_steps=steps, every=4, logger={"tracking_uri": server.uri},
                         extra=[{"class_path": "tests.helpers.faults.SlowSteps", "init_args": {"seconds": 0.3}}])
        work = tmp_path / "work"
        fit = _popen(fit_args(tiny_model_dir, sample_data_dir, "--config", str(recipe)), work)
        _wait_for(lambda: _checkpoints(work), 240, "the first checkpoint", fit)
        server.kill()
        err = _ok(fit)
        run_dir = _run_dir(work)
        spool = run_dir / "mlflow-spool.jsonl"
        assert "unreachable" in err and f"workbench tracking sync {spool.resolve()}" in err
        assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == steps

        server.start()
        server.wait_up()
        client = mlflow.MlflowClient(server.uri)
        assert client.get_run(run_dir.name).info.status == "RUNNING"  # the end status is in the spool too
        proc = run_cli(["tracking", "sync", str(spool)], cwd=work, env=FAST_ENV)
        assert "metric values sent" in proc.stdout
        counts, histories = _metric_counts(server.uri, run_dir.name)
        assert [s for s, _ in histories["train/loss"]] == list(range(steps))
        assert max(counts.values()) <= 2  # `epoch` is logged twice at an epoch's last step, as Lightning does
        assert client.get_run(run_dir.name).info.status == "FINISHED"
        assert client.get_run(run_dir.name).data.params["model/mode"] == "lora"
    finally:
        server.kill()


# -- 5. two runs, one sqlite store -----------------------------------------------------------------
def test_two_runs_share_one_new_sqlite_store(tmp_path, tiny_model_dir, sample_data_dir):
    recipe = _recipe(tmp_path / "short.yaml", max_steps=4, every=4)
    runs = [_popen(fit_args(tiny_model_dir, sample_data_dir, "--config", str(recipe)), tmp_path) for _ in range(2)]
    for proc in runs:
        _ok(proc)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    found = client.search_runs([client.get_experiment_by_name("tiny-cpu").experiment_id])
    assert len(found) == 2 and {r.info.status for r in found} == {"FINISHED"}
    for r in found:
        assert [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")] == [0, 1, 2, 3]


# -- 6. safe loading -----------------------------------------------------------------------------------
def test_pickle_files_are_refused_where_weights_are_read(tmp_path, tiny_model_dir, sample_data_dir):
    from tests.helpers.faults import Pickled

    marker = tmp_path / "unpickled"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model": str(tiny_model_dir), "mode": "lora"},
                "callbacks": Pickled(str(marker))}, evil)
    proc = run_cli(fit_args(tiny_model_dir, sample_data_dir, "--ckpt_path", str(evil)), cwd=tmp_path, check=False,
                   env=FAST_ENV)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: {evil}: refused" in proc.stderr and "weights_only=True" in proc.stderr
    proc = run_cli(["export", str(evil), "--out", str(tmp_path / "export"), "--no-mlflow"], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "weights_only=True" in proc.stderr, proc.stderr[-3000:]
    assert not marker.exists() and not (tmp_path / "runs").exists()

    from workbench.model.loading import PickledWeightsError, load_components

    model = tmp_path / "pickled-model"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "transformer" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    torch.save(load_file(weights), model / "transformer" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(PickledWeightsError, match=r"transformer: weights only in pickle format "
                                                  r"\(diffusion_pytorch_model\.bin\).*safetensors only"):
        load_components(str(model))
