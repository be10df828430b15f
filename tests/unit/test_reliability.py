"""Reliability pieces in-process: atomic checkpoint writes, safe checkpoint reads, the non-finite guard,
the MLflow logger through an outage and a resume, and the source-level loading rules."""

from __future__ import annotations

import ast
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import lightning as L
import mlflow
import pytest
import torch
from lightning.pytorch.loggers.logger import Logger
from mlflow.exceptions import MlflowException
from torch.utils.data import DataLoader

from tests.helpers.faults import Pickled
from workbench.tracking import spool as tracking_spool
from workbench.model.checkpoint import CheckpointError
from workbench.train import checkpoint_io as reliability
from workbench.train.checkpoint_io import AtomicCheckpointIO
from workbench.train.guards import NonFiniteError, NonFiniteGuard
from workbench.tracking.logger import DurableMLflowLogger as MLflowLogger

PACKAGE = Path(__file__).resolve().parents[2] / "workbench"


# -- atomic checkpoint writes ----------------------------------------------------------------------
def _dying_save(obj, f):
    """torch.save that writes part of a file and then fails, as a kill mid-write would leave it."""
    f.write(b"PK\x03\x04 partial checkpoint")
    f.flush()
    raise OSError("disk went away")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"global_step": 4, "w": torch.ones(3)}, path)
    monkeypatch.setattr(reliability.torch, "save", _dying_save)
    with pytest.raises(OSError, match="disk went away"):
        io.save_checkpoint({"global_step": 8, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["global_step"] == 4
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no partial file left


def _write_and_get_killed(path: str) -> None:
    io = AtomicCheckpointIO()

    def save_then_die(obj, f):
        f.write(b"PK\x03\x04 partial checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    reliability.torch.save = save_then_die
    io.save_checkpoint({"global_step": 8}, path)


def test_sigkill_mid_write_leaves_the_previous_checkpoint_whole(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 4, "w": torch.ones(3)}, path)
    proc = multiprocessing.get_context("fork").Process(target=_write_and_get_killed, args=(str(path),))
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    assert io.load_checkpoint(path)["global_step"] == 4
    stale = [p.name for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert len(stale) == 1 and stale[0].startswith(".last.ckpt.") and stale[0].endswith(".tmp")
    io.save_checkpoint({"global_step": 12}, path)  # the next write clears what the killed one left
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert io.load_checkpoint(path)["global_step"] == 12


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path):
    marker, path = tmp_path / "unpickled", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Pickled(str(marker))}, path)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: refused.*weights_only=True"):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


# -- the non-finite guard --------------------------------------------------------------------------
class _Recorder(Logger):
    name, version = "recorder", 0

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int, dict]] = []

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, *args, **kwargs):
        pass


class _Linear(L.LightningModule):
    """One linear layer whose loss is NaN at ``nan_step``; records its weight before every step."""

    def __init__(self, nan_step: int):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.nan_step = nan_step
        self.before: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, batch, batch_idx):
        self.before[self.global_step] = self.layer.weight.detach().clone()

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch).pow(2).mean()
        return loss * float("nan") if self.global_step == self.nan_step else loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(torch.randn(32, 4, generator=torch.Generator().manual_seed(0)), batch_size=2)


def _fit(guard: NonFiniteGuard, nan_step: int = 3, max_steps: int = 6):
    torch.manual_seed(0)
    model, logger = _Linear(nan_step), _Recorder()
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, logger=logger, callbacks=[guard],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=1.0)
    trainer.fit(model)
    return model, logger, trainer


def test_guard_skips_a_nan_step_without_touching_weights_or_optimizer_state():
    guard = NonFiniteGuard(policy="skip")
    model, logger, trainer = _fit(guard)
    assert trainer.global_step == 6 and guard.skipped == 1
    before = model.before
    assert torch.equal(before[3], before[4]), "the NaN step changed the weights"
    assert not torch.equal(before[2], before[3]) and not torch.equal(before[4], before[5])
    assert torch.isfinite(model.layer.weight).all()
    state = trainer.optimizers[0].state[model.layer.weight]
    assert int(state["step"]) == 5  # AdamW did not count the skipped step
    assert [(s, m["train/skipped_steps"]) for s, m in logger.rows if "train/skipped_steps" in m] == [(3, 1.0)]
    assert guard.state_dict() == {"skipped": 1}


def test_guard_stop_policy_names_the_step():
    with pytest.raises(NonFiniteError, match=r"non-finite loss at global step 3 .*policy: stop"):
        _fit(NonFiniteGuard(policy="stop"))


def test_guard_stops_after_max_skipped_steps():
    with pytest.raises(NonFiniteError, match="more than max_skipped_steps=0"):
        _fit(NonFiniteGuard(policy="skip", max_skipped_steps=0))


def test_guard_rejects_unknown_policy():
    with pytest.raises(ValueError, match="choose 'skip' or 'stop'"):
        NonFiniteGuard(policy="ignore")


# -- the MLflow logger: outages ----------------------------------------------------------------------
def _outage(monkeypatch) -> threading.Event:
    """Make every MLflow call fail as an unreachable server does while the returned event is set."""
    real_send, down = tracking_spool.send, threading.Event()
    down.set()

    def send(client, call):
        if down.is_set():
            raise MlflowException("API request to http://127.0.0.1:1/api/2.0/mlflow/runs/log-batch failed with "
                                  "exception ConnectionError")  # INTERNAL_ERROR, as MLflow raises it
        return real_send(client, call)

    monkeypatch.setattr(tracking_spool, "send", send)
    return down


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in mlflow.MlflowClient(uri).get_metric_history(run_id, key))


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_logger_buffers_through_an_outage_and_resends_in_order(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowLogger("exp", tracking_uri=uri, retry_interval_s=0.05)
    logger.spool_path = tmp_path / "run" / "mlflow-spool.jsonl"
    run_id = logger.run_id
    down = _outage(monkeypatch)
    t0 = time.monotonic()
    logger.log_hyperparams({"lr": 0.1})
    for step in range(1, 6):
        logger.log_metrics({"train/loss": step / 10}, step=step)
    assert time.monotonic() - t0 < 2, "logging waited on the unreachable store"
    assert logger.unsent_calls == 6 and len(tracking_spool.read(logger.spool_path)) == 6
    assert "unreachable" in capsys.readouterr().err
    down.clear()  # the store is back
    _wait(lambda: logger.unsent_calls == 0)
    for step in range(6, 8):
        logger.log_metrics({"train/loss": step / 10}, step=step)
    logger.finalize("success")
    assert _history(uri, run_id, "train/loss") == [(s, s / 10) for s in range(1, 8)]
    run = mlflow.MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.1"
    assert not logger.spool_path.exists()  # everything it held reached the store


def test_logger_spools_when_the_store_stays_down_and_sync_sends_it(tmp_path, monkeypatch, capsys):
    from workbench.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowLogger("exp", tracking_uri=uri, retry_interval_s=0.05)
    spool = logger.spool_path = tmp_path / "mlflow-spool.jsonl"
    run_id = logger.run_id
    _outage(monkeypatch)
    for step in range(1, 6):
        logger.log_metrics({"train/loss": step / 10, "lr": 0.01}, step=step)
    logger.finalize("success")
    err = capsys.readouterr().err
    assert f"workbench tracking sync {spool}" in err and "still unreachable" in err
    assert mlflow.MlflowClient(uri).get_run(run_id).info.status == "RUNNING"
    monkeypatch.undo()

    assert main(["tracking", "sync", str(spool)]) == 0
    assert "10 metric values sent" in capsys.readouterr().out  # loss and lr at 5 steps
    assert _history(uri, run_id, "train/loss") == [(s, s / 10) for s in range(1, 6)]
    assert mlflow.MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
    again = tracking_spool.sync(spool)  # idempotent
    assert again.get("metrics_sent", 0) == 0 and again["metrics_present"] == 10
    assert _history(uri, run_id, "lr") == [(s, 0.01) for s in range(1, 6)]


def test_permanent_errors_are_not_buffered(tmp_path):
    logger = MLflowLogger("exp", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    logger.spool_path = tmp_path / "mlflow-spool.jsonl"
    logger.log_hyperparams({"lr": 0.1})
    logger._existing_params.clear()  # as if another process had set it: MLflow refuses a changed param
    with pytest.raises(MlflowException):
        logger.log_hyperparams({"lr": 0.2})
    assert logger.unsent_calls == 0 and not logger.spool_path.exists()


# -- the MLflow logger: resume -------------------------------------------------------------------------
def test_resumed_logger_continues_the_run_without_duplicate_metrics(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = MLflowLogger("exp", tracking_uri=uri)
    first.log_hyperparams({"lr": 1, "ckpt_path": None})
    for step in range(1, 6):  # checkpoint at 3, killed after 5
        first.log_metrics({"train/loss": float(step), "epoch": 0.0}, step=step)
    run_id = first.run_id

    second = MLflowLogger("exp", tracking_uri=uri, resume_run_id=run_id, resume_step=3)
    second.log_hyperparams({"lr": 1, "ckpt_path": "last.ckpt", "new": 3})
    for step in range(4, 9):  # steps 4 and 5 are trained again
        second.log_metrics({"train/loss": 100.0 + step, "epoch": 0.0}, step=step)
    second.finalize("success")

    assert second.run_id == run_id
    history = _history(uri, run_id, "train/loss")
    assert history == [(s, float(s)) for s in range(1, 6)] + [(s, 100.0 + s) for s in range(6, 9)]
    assert [s for s, _ in _history(uri, run_id, "epoch")] == list(range(1, 9))
    run = mlflow.MlflowClient(uri).get_run(run_id)
    assert run.data.tags["workbench.resumed_from_step"] == "3" and run.info.status == "FINISHED"
    assert run.data.params["ckpt_path"] == "None" and run.data.params["new"] == "3"


def test_resume_into_another_store_starts_a_new_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowLogger("exp", tracking_uri=uri, resume_run_id="0" * 32, resume_step=16)
    assert logger.run_id != "0" * 32
    tags = mlflow.MlflowClient(uri).get_run(logger.run_id).data.tags
    assert tags["workbench.resumed_from_run"] == "0" * 32 and tags["workbench.resumed_from_step"] == "16"


# -- loading rules, checked in the source ----------------------------------------------------------
def _calls(name: str):
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
                yield path, node


def test_weights_are_loaded_from_safetensors_only():
    weight_classes = ("Model", "Pipeline", "Autoencoder", "Transformer")
    not_weights = ("Tokenizer", "Processor", "Scheduler", "Config")
    checked = 0
    for path, node in _calls("from_pretrained"):
        owner = ast.unparse(node.func.value)
        if not any(w in owner for w in weight_classes) or any(n in owner for n in not_weights):
            continue
        kwargs = {k.arg: ast.unparse(k.value) for k in node.keywords}
        assert kwargs.get("use_safetensors") == "True", f"{path.name}:{node.lineno}: {owner}.from_pretrained " \
                                                        "without use_safetensors=True"
        checked += 1
    assert checked >= 6


def test_no_unsafe_loading_anywhere():
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        assert "trust_remote_code" not in text, path
        assert "weights_only=False" not in text, path
    for path, node in _calls("load"):
        if ast.unparse(node.func.value) == "torch":
            kwargs = {k.arg: ast.unparse(k.value) for k in node.keywords}
            assert kwargs.get("weights_only") == "True", f"{path.name}:{node.lineno}: torch.load without weights_only=True"


def test_safetensors_files_are_checked_by_header_and_size(tmp_path):
    import torch
    from safetensors.torch import save_file

    from workbench.model.loading import CorruptWeightsError, check_safetensors_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(64), "b": torch.ones(3, 5)}, str(path))
    check_safetensors_file(path)  # whole: fine
    data = path.read_bytes()
    for broken, message in ((data[:-1], "where its header says"), (data + b"\0", "where its header says"),
                            (data[:5], "not a readable safetensors file"),
                            (b"\xff" * 8 + data[8:], "not a readable safetensors file"),
                            (data[:8] + b"{not json" + data[17:], "not a readable safetensors file")):
        path.write_bytes(broken)
        with pytest.raises(CorruptWeightsError, match=message):
            check_safetensors_file(path)
