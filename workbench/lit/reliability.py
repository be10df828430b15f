"""What keeps a long run's results whole when something goes wrong.

* ``AtomicCheckpointIO``: a checkpoint file is either the old complete one or the new complete one,
  whatever kills the process mid-write; and checkpoints are read with ``torch.load(weights_only=True)``.
* ``NonFiniteGuard``: a step whose loss or gradients are not finite does not update the weights; it is
  skipped and counted (``policy: skip``) or stops the run naming the step (``policy: stop``).
* ``ResumableCLI``: ``--ckpt_path`` is checked to hold only tensors and plain data before anything runs,
  and the run goes on in the MLflow run that wrote the checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

MLFLOW_CHECKPOINT_KEY = "mlflow"  # checkpoint["mlflow"] = {"run_id", "tracking_uri"}, written by LogRecipe


class CheckpointError(Exception):
    """A checkpoint that cannot be used (missing, not loadable as plain tensors); printed without a traceback."""


class NonFiniteError(RuntimeError):
    """Training stopped on a non-finite loss or gradient (``NonFiniteGuard``)."""


# -- checkpoints ---------------------------------------------------------------------------------
def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file next to ``path``, fsync, then rename it over ``path``.

    A reader (or a resume after a kill) sees the previous file or the complete new one, never a partial
    file under the final name. Leftovers of a write that was killed are removed by the next write.
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


def load_checkpoint_safely(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """``torch.load(weights_only=True)``: tensors and plain Python data only, never arbitrary unpickling.

    Raises CheckpointError naming the file when it is missing or holds anything else (a pickled object).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a plain tensor checkpoint"
        text = str(e).strip()
        reason = text.splitlines()[0] if text else type(e).__name__
        raise CheckpointError(
            f"{path}: refused, it cannot be read with torch.load(weights_only=True) ({reason}). workbench loads "
            "only checkpoints of tensors and plain data (as `workbench fit` writes them) and never unpickles "
            "arbitrary objects, which could run code. Use a checkpoint written by `workbench fit`."
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (a {type(checkpoint).__name__}, not a dict)")
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes atomically in the checkpoint's own directory and reads safely.

    Lightning's own ``TorchCheckpointIO`` stages the file in the system temp directory and moves it into
    place, which is a copy (not atomic) across filesystems, and does not fsync. ``last.ckpt`` goes through
    here too (``ModelCheckpoint(save_last=True)`` saves it as a checkpoint of its own).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        if "://" in str(path):  # remote storage: fsspec's own transaction
            return super().save_checkpoint(checkpoint, path)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any = "cpu", weights_only: bool | None = None) -> dict[str, Any]:
        """Always ``weights_only=True`` (also when Lightning passes None or False; remote files included)."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load_checkpoint_safely(path, map_location=map_location)


# -- non-finite loss or gradients ----------------------------------------------------------------
class NonFiniteGuard(L.Callback):
    """Keep a non-finite loss or gradient out of the weights.

    Before each optimizer step the loss of every micro-batch since the last step and the norm of all
    gradients are checked (one device sync per step; with several processes the decision is shared).
    If one is NaN or infinite, the gradients are dropped so the optimizer leaves every weight and its own
    state as they were; the step counter and the learning-rate schedule still advance, as with AMP's
    GradScaler. Then, by ``policy``:

    * ``skip``: count it (metric ``train/skipped_steps``, the total so far, kept across resumes) and go on;
      after more than ``max_skipped_steps`` skips the run stops as with ``stop``.
    * ``stop``: raise NonFiniteError naming the step. No checkpoint holds non-finite weights: the last one
      written (named in the message) is the one to resume from.

    With fp16 mixed precision the GradScaler already skips steps whose scaled gradients overflow (and
    lowers the scale); only the loss is checked then.
    """

    def __init__(self, policy: Literal["skip", "stop"] = "skip", max_skipped_steps: int | None = 10):
        if policy not in ("skip", "stop"):
            raise ValueError(f"policy={policy!r}: choose 'skip' or 'stop'")
        if max_skipped_steps is not None and max_skipped_steps < 0:
            raise ValueError(f"max_skipped_steps={max_skipped_steps}: must be >= 0 (or null for no limit)")
        self.policy, self.max_skipped_steps = policy, max_skipped_steps
        self.skipped = 0
        self._loss_finite: torch.Tensor | None = None

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).all()
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        loss_finite, self._loss_finite = self._loss_finite, None
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        grad_norm = None
        ok = torch.ones((), dtype=torch.bool, device=pl_module.device) if loss_finite is None else loss_finite
        if grads and scaler is None:
            grad_norm = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False)
            ok = ok & torch.isfinite(grad_norm).to(ok.device)
        bad = trainer.strategy.reduce_boolean_decision(not bool(ok), all=False)
        if not bad:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        step = trainer.global_step
        what = "loss" if loss_finite is not None and not bool(loss_finite) else "gradient"
        detail = f"gradient norm {float(grad_norm)}" if grad_norm is not None else "gradients not checked (fp16)"
        where = f"global step {step} (epoch {trainer.current_epoch}, {what} not finite; {detail})"
        self.skipped += 1
        for logger in trainer.loggers:
            logger.log_metrics({"train/skipped_steps": float(self.skipped)}, step=step)
        too_many = self.max_skipped_steps is not None and self.skipped > self.max_skipped_steps
        if self.policy == "stop" or too_many:
            last = _last_checkpoint(trainer)
            why = ("policy: stop" if self.policy == "stop"
                   else f"{self.skipped} skipped steps, more than max_skipped_steps={self.max_skipped_steps}")
            resume = (f"The last good checkpoint is {last} (resume: --ckpt_path {last})" if last
                      else "No checkpoint was written before it")
            raise NonFiniteError(f"non-finite {what} at {where}: stopping ({why}); this step did not update the "
                                 f"weights. {resume}. If it recurs, check the data (`workbench data check`) and "
                                 "the learning rate.")
        rank_zero_warn(f"skipped the update at {where}; {self.skipped} skipped so far")

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


def _last_checkpoint(trainer) -> str | None:
    """The newest checkpoint file on disk (every checkpoint is written atomically, so it is complete)."""
    paths = []
    for cb in trainer.checkpoint_callbacks:
        for p in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")):
            if p and Path(p).is_file():
                paths.append(Path(p))
    return str(max(paths, key=lambda p: p.stat().st_mtime)) if paths else None


# -- resuming from the command line --------------------------------------------------------------
class ResumableCLI(LightningCLI):
    """LightningCLI that, given ``--ckpt_path FILE``, refuses a checkpoint that is not plain tensors and data
    (before building anything) and continues the MLflow run recorded in it: the workbench MLflow logger gets
    ``resume_run_id`` and ``resume_step`` unless the command line names a ``run_id``."""

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand is None:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry") or "://" in str(ckpt_path):
            return
        checkpoint = load_checkpoint_safely(ckpt_path)
        run = checkpoint.get(MLFLOW_CHECKPOINT_KEY) or {}
        if subcommand != "fit" or not run.get("run_id"):
            return
        loggers = self.config[subcommand].trainer.get("logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            class_path = str(getattr(logger, "class_path", "") or "")
            if not class_path.endswith("workbench.tracking.MLflowLogger"):
                continue
            init_args = logger.init_args
            if init_args.get("run_id") is None and init_args.get("resume_run_id") is None:
                init_args.resume_run_id = run["run_id"]
                init_args.resume_step = int(checkpoint.get("global_step", 0))
